// SPDX-License-Identifier: MIT
#include "client/fetch.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <deque>
#include <memory>

#include "client/sha256.hpp"
#include "client/sink.hpp"
#include "common/digest/digest.hpp"
#include "common/digest/repr_digest.hpp"
#include "common/http/message.hpp"
#include "common/net/address.hpp"
#include "common/net/client.hpp"
#include "common/net/tls.hpp"
#include "common/uv/handle.hpp"

namespace cdn::get {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

std::string dirname_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string basename_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// False only when the directory's storage reported an error. A directory we
// may not open for reading, or a file system that cannot sync directories,
// leaves nothing more that we could do.
bool sync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return true;
  const bool ok = fsync(fd) == 0 || errno == EINVAL || errno == EROFS;
  const int saved = errno;
  ::close(fd);
  errno = saved;
  return ok;
}

class Fetcher {
 public:
  explicit Fetcher(const Options& o) : opt_(o) { uv_loop_init(&loop_); }
  ~Fetcher() { discard_temp(); }

  Result run() {
    deadline_ = Clock::now() + opt_.wait;
    if (opt_.resume && !to_stdout() && !open_partial()) return result_;
    retry_timer_ = uv::make_timer(&loop_, [this] { ask_balancer(); });
    // Ctrl-C ends the download through the loop, so that the destructor
    // removes the temporary file (a signal's default action would leave it).
    sigint_ = uv::make_signal(&loop_, SIGINT, [this] { finish(kInterrupted, "interrupted"); });
    sigterm_ = uv::make_signal(&loop_, SIGTERM, [this] { finish(kInterrupted, "terminated"); });
    ask_balancer();
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv::close_loop(&loop_);
    return result_;
  }

 private:
  enum class Mode { Unknown, Redirect, Body, Retry, Reject, Gone, Again };

  void finish(int code, std::string message) {
    if (finished_) return;
    finished_ = true;
    result_.exit_code = code;
    result_.message = std::move(message);
    conn_.reset();
    retry_timer_.reset();
    sigint_.reset();
    sigterm_.reset();
  }

  void fail_attempt(const std::string& why) {
    spdlog::info("{}", why);
    result_.failures.push_back(why);
  }

  void ask_balancer() {
    if (finished_) return;
    ++rounds_;
    candidates_.clear();
    attempt(opt_.start, true);
  }

  void next_candidate() {
    if (finished_) return;
    if (!candidates_.empty()) {
      Url next = candidates_.front();
      candidates_.pop_front();
      attempt(next, false);
      return;
    }
    if (rounds_ < opt_.max_rounds) {
      // The balancer may know by now that the replicas we tried are down.
      ask_balancer();
      return;
    }
    const bool all_verify = verify_failures_ > 0 && verify_failures_ == attempts_failed_;
    finish(all_verify ? kVerifyFailed : kTransferFailed,
           all_verify ? "the content failed verification on every replica"
                      : "download failed on every replica");
  }

  void retry_balancer_later(milliseconds delay, const std::string& why) {
    const auto now = Clock::now();
    if (now + delay > deadline_) {
      if (now < deadline_ && deadline_ - now > milliseconds(100)) {
        delay = std::chrono::duration_cast<milliseconds>(deadline_ - now);
      } else {
        finish(kNoReplica, why);
        return;
      }
    }
    spdlog::info("{}; asking again in {} ms", why, delay.count());
    if (opt_.on_wait) opt_.on_wait(why, delay);
    --rounds_;  // waiting for a replica to come up is not a failed round
    uv::timer_start(retry_timer_.get(), static_cast<uint64_t>(delay.count()), 0);
  }

  void attempt(const Url& url, bool balancer) {
    current_ = url;
    asking_balancer_ = balancer;
    mode_ = Mode::Unknown;
    reject_reason_.clear();
    std::string err;
    auto addr = net::resolve(url.host, url.port, &err);
    if (!addr) {
      on_attempt_error(url.authority() + ": " + err);
      return;
    }
    // https://: TLS over each TCP connection, the host name checked against
    // the certificate (unless --insecure).
    net::TransportLayer layer;
    tls_failure_.clear();
    if (url.tls) {
      layer = [this, host = url.host](net::Transport::Ptr below) {
        return net::TlsTransport::client(&loop_, std::move(below), opt_.tls, host, opt_.timeout,
                                         [this](const std::string& why) { tls_failure_ = why; });
      };
    }
    conn_ = net::ClientConnection::create(&loop_, *addr, {}, std::move(layer));
    std::string extra = "User-Agent: cdn-get\r\nAccept: */*\r\n";
    if (!balancer && written_ > 0 && (!etag_.empty() || continuing_)) {
      // Resume where the last replica stopped, if it is still the same
      // content (a partial file of --continue has no validator to offer).
      extra += "Range: bytes=" + std::to_string(written_) + "-\r\n";
      if (!etag_.empty()) extra += "If-Range: " + etag_ + "\r\n";
    }
    net::ClientCallbacks cb;
    cb.on_headers = [this](const http::Response& r) { return on_headers(r); };
    cb.on_body = [this](std::string_view piece) { return on_body(piece); };
    cb.on_done = [this](const net::ClientResult& r, const http::Response& resp) {
      on_done(r, resp);
    };
    conn_->request("GET", url.target, url.authority(), extra, opt_.timeout, std::move(cb));
  }

  bool on_headers(const http::Response& r) {
    if (r.status >= 300 && r.status < 400 && r.header("Location")) {
      mode_ = Mode::Redirect;
      return true;
    }
    if (r.status == 404 || r.status == 410) {
      // Every replica serves the same site: another would answer the same.
      mode_ = Mode::Gone;
      reject_reason_ = "HTTP " + std::to_string(r.status) + " " + r.reason;
      return false;
    }
    if (r.status == 503 && asking_balancer_) {
      mode_ = Mode::Retry;
      return true;
    }
    if (r.status == 200) {
      if (written_ > 0 && !restart_download()) return false;
      begin_body(r);
      return mode_ == Mode::Body;
    }
    if (r.status == 206 && written_ > 0) {
      auto range = r.header("Content-Range");
      const std::string expect = "bytes " + std::to_string(written_) + "-";
      const bool first_resume = continuing_ && etag_.empty();
      if (range && range->substr(0, expect.size()) == expect &&
          (first_resume || r.header("ETag").value_or("") == etag_)) {
        mode_ = Mode::Body;
        resumed_at_ = written_;
        if (first_resume) {
          expected_digest_ = digest::sha256_from_repr_digest(r.header("Repr-Digest").value_or(""));
          etag_ = std::string(r.header("ETag").value_or(""));
          if (etag_.starts_with("W/")) etag_.clear();
          replica_name_ = std::string(r.header("CDN-Replica").value_or(""));
        }
        const size_t slash = range->rfind('/');
        expected_total_ = std::strtoull(std::string(range->substr(slash + 1)).c_str(), nullptr, 10);
        spdlog::info("{}: resuming at byte {}", current_.authority(), written_);
        if (opt_.on_body_start) opt_.on_body_start(written_, expected_total_, current_.authority());
        return true;
      }
    }
    if (r.status == 416 && written_ > 0 && restart_download()) {
      // The partial file is as long as the content or longer: fetch it whole.
      sha_.reset();
      mode_ = Mode::Again;
      return false;
    }
    mode_ = Mode::Reject;
    reject_reason_ = "HTTP " + std::to_string(r.status) + " " + r.reason;
    return false;
  }

  bool restart_download() {
    if (to_stdout()) {
      reject_reason_ = "cannot restart a download already written to standard output";
      mode_ = Mode::Reject;
      return false;
    }
    written_ = 0;
    if (sink_ && !sink_->restart()) {
      write_error_ = std::strerror(sink_->error());
      return false;
    }
    return true;
  }

  void begin_body(const http::Response& r) {
    if (!open_output()) {
      mode_ = Mode::Reject;
      return;
    }
    sha_.reset();
    written_ = 0;
    resumed_at_ = 0;
    mode_ = Mode::Body;
    expected_total_ = r.content_length.value_or(UINT64_MAX);
    expected_digest_ = digest::sha256_from_repr_digest(r.header("Repr-Digest").value_or(""));
    etag_ = std::string(r.header("ETag").value_or(""));
    if (etag_.starts_with("W/")) etag_.clear();  // only a strong validator may resume
    replica_name_ = std::string(r.header("CDN-Replica").value_or(""));
    if (opt_.on_body_start) opt_.on_body_start(0, expected_total_, current_.authority());
  }

  bool to_stdout() const { return opt_.output == "-"; }

  // --continue: the output file's bytes are the first of the download; they
  // go into the digest now, and the body is appended in place. No file, or
  // an empty one: an ordinary download (temporary file and rename).
  bool open_partial() {
    const int fd = ::open(opt_.output.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return true;
    std::string buf(1 << 16, '\0');
    uint64_t n = 0;
    for (;;) {
      const ssize_t got = ::read(fd, buf.data(), buf.size());
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) {
        finish(kWriteFailed, "cannot read " + opt_.output + ": " + std::strerror(errno));
        ::close(fd);
        return false;
      }
      if (got == 0) break;
      sha_.update(std::string_view(buf.data(), static_cast<size_t>(got)));
      n += static_cast<uint64_t>(got);
    }
    if (n == 0) {
      ::close(fd);
      sha_.reset();
      return true;
    }
    tmp_fd_ = fd;
    written_ = n;
    continuing_ = true;
    sink_ = std::make_unique<FileSink>(fd, static_cast<off_t>(n));
    spdlog::info("{}: {} bytes kept, asking for the rest", opt_.output, n);
    return true;
  }

  bool open_output() {
    if (to_stdout()) {
      tmp_fd_ = STDOUT_FILENO;
      return true;
    }
    if (tmp_fd_ >= 0) return true;
    tmp_path_ = dirname_of(opt_.output) + "/." + basename_of(opt_.output) + ".cdn-get.XXXXXX";
    tmp_fd_ = mkstemp(tmp_path_.data());
    if (tmp_fd_ < 0) {
      write_error_ = "cannot create a file beside " + opt_.output + ": " + std::strerror(errno);
      tmp_path_.clear();
      return false;
    }
    sink_ = std::make_unique<FileSink>(tmp_fd_);
    return true;
  }

  bool on_body(std::string_view piece) {
    if (mode_ != Mode::Body) return true;  // a redirect's or error's text: ignored
    if (sink_) {
      if (!sink_->append(piece)) {
        write_error_ = "cannot write " + opt_.output + ": " + std::strerror(sink_->error());
        return false;
      }
    } else if (!write_stdout(piece)) {
      return false;
    }
    sha_.update(piece);
    written_ += piece.size();
    if (opt_.on_body_progress) opt_.on_body_progress(written_);
    return true;
  }

  // Standard output gets every piece at once: a reader downstream waits.
  bool write_stdout(std::string_view piece) {
    const char* p = piece.data();
    size_t left = piece.size();
    while (left > 0) {
      const ssize_t n = ::write(tmp_fd_, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        write_error_ = "cannot write " + opt_.output + ": " + std::strerror(errno);
        return false;
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
    return true;
  }

  void on_attempt_error(const std::string& why) {
    if (asking_balancer_) {
      retry_balancer_later(milliseconds(500), "balancer " + why);
      return;
    }
    ++attempts_failed_;
    fail_attempt(why);
    next_candidate();
  }

  void on_done(const net::ClientResult& r, const http::Response& resp) {
    if (finished_) return;
    if (!write_error_.empty()) {
      finish(kWriteFailed, write_error_);
      return;
    }
    switch (mode_) {
      case Mode::Redirect: {
        if (!r.ok() && r.error != net::ClientError::Aborted) {
          // The head said where to go; the rest does not matter.
        }
        add_candidates(resp);
        next_candidate();
        return;
      }
      case Mode::Retry: {
        milliseconds delay(1000);
        if (auto ra = resp.header("Retry-After")) {
          const long secs = std::strtol(std::string(*ra).c_str(), nullptr, 10);
          if (secs > 0 && secs < 3600) delay = milliseconds(secs * 1000);
        }
        retry_balancer_later(delay, "waiting for a replica (503)");
        return;
      }
      case Mode::Again:
        candidates_.push_front(current_);
        next_candidate();
        return;
      case Mode::Gone:
        finish(kNotFound, current_.authority() + current_.target + ": " + reject_reason_);
        return;
      case Mode::Reject:
        on_attempt_error(current_.authority() + current_.target + ": " + reject_reason_);
        return;
      case Mode::Unknown:
        on_attempt_error(r.ok()                 ? current_.authority() + ": no usable answer"
                         : tls_failure_.empty() ? r.message
                                                : current_.authority() + ": TLS: " + tls_failure_);
        return;
      case Mode::Body:
        break;
    }
    if (!r.ok()) {
      on_attempt_error(r.message + " (" + std::to_string(written_) + " bytes kept)");
      return;
    }
    if (expected_total_ != UINT64_MAX && written_ != expected_total_) {
      ++verify_failures_;
      restart_download();
      on_attempt_error(current_.authority() + ": got " + std::to_string(written_) +
                       " bytes, expected " + std::to_string(expected_total_));
      return;
    }
    if (!expected_digest_.empty()) {
      const auto md = sha_.finish();
      const std::string got = digest::repr_digest_sha256(md.data(), md.size());
      if (got != expected_digest_) {
        ++verify_failures_;
        restart_download();
        on_attempt_error(current_.authority() + ": digest mismatch (announced " + expected_digest_ +
                         ", got " + got + ")");
        return;
      }
    }
    publish();
  }

  void add_candidates(const http::Response& resp) {
    RedirectTargets found = redirect_targets(current_, asking_balancer_, resp.header("Location"),
                                             resp.header("CDN-Fallback"));
    if (found.ignored > 0) {
      // One line per answer, however many URLs it held.
      spdlog::warn("{}: ignoring {} redirect URL{} not in the balancer's form ({}{})",
                   current_.authority(), found.ignored, found.ignored == 1 ? "" : "s",
                   found.first_problem, found.ignored == 1 ? "" : ", ...");
    }
    if (++redirects_ > 20) {
      finish(kTransferFailed, "too many redirects");
      return;
    }
    // A redirect from a replica (e.g. to a directory's slash) is tried first.
    for (auto it = found.urls.rbegin(); it != found.urls.rend(); ++it) candidates_.push_front(*it);
  }

  void publish() {
    std::string name = current_.authority();
    if (!replica_name_.empty() && replica_name_ != name) name += " (" + replica_name_ + ")";
    if (!to_stdout()) {
      if (tmp_fd_ < 0 && !open_output()) {  // an empty body never opened the file
        finish(kWriteFailed, write_error_);
        return;
      }
      if (!sink_->finish()) {
        finish(kWriteFailed, "cannot write " + opt_.output + ": " + std::strerror(sink_->error()));
        return;
      }
      sink_.reset();  // its thread is done with the descriptor
      if (continuing_) {
        // Appended in place: the file keeps its name and mode.
        const bool ok = fsync(tmp_fd_) == 0;
        const int err = errno;
        ::close(tmp_fd_);
        tmp_fd_ = -1;
        if (!ok) {
          finish(kWriteFailed, "cannot write " + opt_.output + ": " + std::strerror(err));
          return;
        }
        result_.bytes = written_;
        result_.replica = name;
        const std::string how =
            resumed_at_ > 0 ? ", resumed at byte " + std::to_string(resumed_at_) : "";
        finish(kOk, "saved " + opt_.output + " (" + std::to_string(written_) + " bytes" + how +
                        ") from " + name);
        return;
      }
      const mode_t mask = umask(0);
      umask(mask);
      if (fchmod(tmp_fd_, 0666 & ~mask) != 0 || fsync(tmp_fd_) != 0 || ::close(tmp_fd_) != 0) {
        tmp_fd_ = -1;
        finish(kWriteFailed, "cannot write " + opt_.output + ": " + std::strerror(errno));
        return;
      }
      tmp_fd_ = -1;
      if (::rename(tmp_path_.c_str(), opt_.output.c_str()) != 0) {
        finish(kWriteFailed, "cannot rename to " + opt_.output + ": " + std::strerror(errno));
        return;
      }
      tmp_path_.clear();
      // The new name is durable only once its directory is: without this a
      // crash right after "saved" may bring back the old file, or none.
      if (!sync_directory(dirname_of(opt_.output))) {
        finish(kWriteFailed,
               "cannot sync the directory of " + opt_.output + ": " + std::strerror(errno));
        return;
      }
    }
    result_.bytes = written_;
    result_.replica = name;
    finish(kOk, "saved " + opt_.output + " (" + std::to_string(written_) + " bytes) from " + name);
  }

  void discard_temp() {
    sink_.reset();  // joins the writer before its descriptor goes
    if (tmp_fd_ >= 0 && tmp_fd_ != STDOUT_FILENO) ::close(tmp_fd_);
    tmp_fd_ = -1;
    if (!tmp_path_.empty()) ::unlink(tmp_path_.c_str());
    tmp_path_.clear();
  }

  uv_loop_t loop_{};
  Options opt_;
  Result result_;
  Clock::time_point deadline_;
  uv::Ptr<uv_timer_t> retry_timer_;
  uv::Ptr<uv_signal_t> sigint_, sigterm_;
  net::ClientConnection::Ptr conn_;
  std::deque<Url> candidates_;
  Url current_;
  bool asking_balancer_ = false;
  bool continuing_ = false;  // --continue found bytes in the output file
  uint64_t resumed_at_ = 0;  // where the body being received began (0: whole)
  bool finished_ = false;
  int rounds_ = 0;
  int redirects_ = 0;
  int attempts_failed_ = 0;
  int verify_failures_ = 0;
  Mode mode_ = Mode::Unknown;
  std::string reject_reason_;
  std::string tls_failure_;  // why the last TLS handshake failed, if it did
  std::string write_error_;

  int tmp_fd_ = -1;
  std::string tmp_path_;
  std::unique_ptr<FileSink> sink_;  // writes tmp_fd_; none for standard output
  Sha256 sha_;
  uint64_t written_ = 0;
  uint64_t expected_total_ = UINT64_MAX;
  std::string expected_digest_;
  std::string etag_;
  std::string replica_name_;
};

}  // namespace

Result fetch(const Options& options) {
  Fetcher f(options);
  return f.run();
}

}  // namespace cdn::get
