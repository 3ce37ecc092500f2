// SPDX-License-Identifier: MIT
// The content store against a real directory tree made per test (mkdtemp),
// including the hostile parts: symlinks out of the root, fifos, files that
// change between lookup and open.
#include "daemons/replicad/store.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/http/mime.hpp"
#include "common/http/path.hpp"
#include "common/http/serialize.hpp"
#include "common/log/burst.hpp"

namespace cdn::replica {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/replica_store_test.XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    // Canonical, so that source() (which resolves) can be compared with it.
    path_ = fs::canonical(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void write_file(const fs::path& p, const std::string& content) {
  fs::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << content;
  ASSERT_TRUE(out.good()) << p;
}

std::string read_fd(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

std::string sha256_repr_digest(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EXPECT_EQ(EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr), 1);
  unsigned char b64[64];
  const int n = EVP_EncodeBlock(b64, md, static_cast<int>(len));
  return "sha-256=:" + std::string(reinterpret_cast<char*>(b64), static_cast<size_t>(n)) + ":";
}

std::shared_ptr<const Object> found(const Lookup& l) {
  const auto* f = std::get_if<Found>(&l);
  return f != nullptr ? f->object : nullptr;
}

// "hello\n": sha-256 5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03.
constexpr const char* kHelloDigest = "sha-256=:WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM=:";
constexpr const char* kHelloEtag = "\"5891b5b522d5df08\"";

// Every test runs twice: with openat2 and with the realpath fallback.
class StoreTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    Store::disable_openat2_for_testing(GetParam());
    fs::create_directories(site());
  }
  void TearDown() override { Store::disable_openat2_for_testing(false); }

  std::unique_ptr<Store> open_store(uint64_t memory_limit = 256 * 1024) {
    return Store::open_root(site().string(), "index.html", memory_limit);
  }
  // The content lives in <tmp>/site so that <tmp>/secret is "outside".
  fs::path site() const { return tmp_.path() / "site"; }

  TempDir tmp_;
};

TEST_P(StoreTest, FoundAndNotFound) {
  write_file(site() / "hello.txt", "hello\n");
  auto store = open_store();
  auto obj = found(store->lookup("/hello.txt"));
  ASSERT_TRUE(obj);
  EXPECT_EQ(obj->rel, "hello.txt");
  EXPECT_EQ(obj->size, 6u);
  EXPECT_EQ(obj->body, "hello\n");
  EXPECT_TRUE(obj->in_memory);
  EXPECT_TRUE(std::holds_alternative<NotFound>(store->lookup("/missing.txt")));
  EXPECT_TRUE(std::holds_alternative<NotFound>(store->lookup("/nodir/missing.txt")));
  // A file used as a directory.
  EXPECT_TRUE(std::holds_alternative<NotFound>(store->lookup("/hello.txt/x")));
  EXPECT_TRUE(std::holds_alternative<NotFound>(store->lookup("/hello.txt/")));
}

TEST_P(StoreTest, MetadataMatchesStat) {
  write_file(site() / "page.html", "<p>hi</p>\n");
  auto store = open_store();
  auto obj = found(store->lookup("/page.html"));
  ASSERT_TRUE(obj);
  struct stat st {};
  ASSERT_EQ(::stat((site() / "page.html").c_str(), &st), 0);
  EXPECT_EQ(obj->inode, static_cast<uint64_t>(st.st_ino));
  EXPECT_EQ(obj->device, static_cast<uint64_t>(st.st_dev));
  EXPECT_EQ(obj->mtime, st.st_mtim.tv_sec);
  EXPECT_EQ(obj->mtime_nsec, st.st_mtim.tv_nsec);
  EXPECT_EQ(obj->content_type, http::mime_type("page.html"));
  EXPECT_EQ(obj->last_modified, http::http_date(st.st_mtim.tv_sec));
}

TEST_P(StoreTest, IndexFiles) {
  write_file(site() / "index.html", "root index");
  write_file(site() / "docs" / "index.html", "docs index");
  fs::create_directories(site() / "empty");
  auto store = open_store();
  auto root = found(store->lookup("/"));
  ASSERT_TRUE(root);
  EXPECT_EQ(root->body, "root index");
  EXPECT_EQ(root->rel, "index.html");
  EXPECT_EQ(root->content_type, http::mime_type("index.html"));
  auto docs = found(store->lookup("/docs/"));
  ASSERT_TRUE(docs);
  EXPECT_EQ(docs->body, "docs index");
  EXPECT_EQ(docs->rel, "docs/index.html");
  EXPECT_TRUE(std::holds_alternative<NotFound>(store->lookup("/empty/")));
  // An "index" that is itself a directory is no index.
  fs::create_directories(site() / "odd" / "index.html");
  EXPECT_TRUE(std::holds_alternative<NotFound>(store->lookup("/odd/")));
}

TEST_P(StoreTest, CustomIndexName) {
  write_file(site() / "default.htm", "custom");
  auto store = Store::open_root(site().string(), "default.htm");
  auto obj = found(store->lookup("/"));
  ASSERT_TRUE(obj);
  EXPECT_EQ(obj->body, "custom");
  EXPECT_THROW(Store::open_root(site().string(), "a/b.html"), std::runtime_error);
  EXPECT_THROW(Store::open_root(site().string(), ""), std::runtime_error);
  EXPECT_THROW(Store::open_root(site().string(), ".."), std::runtime_error);
}

TEST_P(StoreTest, DirectoryWithoutSlashRedirects) {
  write_file(site() / "docs" / "index.html", "docs");
  fs::create_directories(site() / "a" / "b");
  auto store = open_store();
  auto l = store->lookup("/docs");
  ASSERT_TRUE(std::holds_alternative<RedirectSlash>(l));
  EXPECT_EQ(std::get<RedirectSlash>(l).location, "/docs/");
  l = store->lookup("/a/b");
  ASSERT_TRUE(std::holds_alternative<RedirectSlash>(l));
  EXPECT_EQ(std::get<RedirectSlash>(l).location, "/a/b/");
}

TEST_P(StoreTest, Source) {
  auto store = open_store();
  EXPECT_EQ(store->source(), "root:" + site().string());
  // A relative or symlinked root is reported resolved.
  fs::create_directory_symlink(site(), tmp_.path() / "link");
  auto via_link = Store::open_root((tmp_.path() / "link").string(), "index.html");
  EXPECT_EQ(via_link->source(), "root:" + site().string());
}

TEST_P(StoreTest, OpenErrorsAreClear) {
  const std::string missing = (tmp_.path() / "nope").string();
  try {
    Store::open_root(missing, "index.html");
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "content root " + missing + ": No such file or directory");
  }
  write_file(tmp_.path() / "file", "x");
  try {
    Store::open_root((tmp_.path() / "file").string(), "index.html");
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()),
              "content root " + (tmp_.path() / "file").string() + ": Not a directory");
  }
  try {
    Store::open_page(missing);
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "page " + missing + ": No such file or directory");
  }
  try {
    Store::open_page(site().string());
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "page " + site().string() + ": not a regular file");
  }
}

TEST_P(StoreTest, PageMode) {
  write_file(site() / "page.html", "the page");
  write_file(site() / "other.html", "not served");
  auto store = Store::open_page((site() / "page.html").string());
  EXPECT_EQ(store->source(), "page:" + (site() / "page.html").string());
  auto a = found(store->lookup("/"));
  auto b = found(store->lookup("/page.html"));
  ASSERT_TRUE(a);
  ASSERT_TRUE(b);
  EXPECT_EQ(a->body, "the page");
  EXPECT_EQ(a->rel, "page.html");
  EXPECT_EQ(a, b);  // one cache entry for both names
  EXPECT_EQ(a->content_type, http::mime_type("page.html"));
  EXPECT_TRUE(std::holds_alternative<NotFound>(store->lookup("/other.html")));
  EXPECT_TRUE(std::holds_alternative<NotFound>(store->lookup("/page.html/")));
  EXPECT_TRUE(std::holds_alternative<NotFound>(store->lookup("/x/page.html")));
  // open() streams the page as well.
  const int fd = store->open(*a);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(read_fd(fd), "the page");
  ::close(fd);
}

TEST_P(StoreTest, PageGivenAsSymlinkIsServedFromItsTarget) {
  write_file(site() / "real.html", "real");
  fs::create_symlink(site() / "real.html", tmp_.path() / "alias.html");
  auto store = Store::open_page((tmp_.path() / "alias.html").string());
  EXPECT_EQ(store->source(), "page:" + (site() / "real.html").string());
  auto obj = found(store->lookup("/real.html"));
  ASSERT_TRUE(obj);
  EXPECT_EQ(obj->body, "real");
  EXPECT_TRUE(found(store->lookup("/")));
}

TEST_P(StoreTest, TraversalIsForbidden) {
  write_file(tmp_.path() / "secret", "top secret\n");
  write_file(site() / "sub" / "f.txt", "f");
  auto store = open_store();
  // normalize_path never produces these, but the store must not rely on it.
  EXPECT_TRUE(std::holds_alternative<Forbidden>(store->lookup("/../secret")));
  EXPECT_TRUE(std::holds_alternative<Forbidden>(store->lookup("/sub/../../secret")));
  // An absolute and a relative symlink out of the root.
  fs::create_symlink(tmp_.path() / "secret", site() / "abs_out");
  fs::create_symlink("../secret", site() / "rel_out");
  fs::create_symlink("../../secret", site() / "sub" / "rel_out2");
  fs::create_symlink("/etc/passwd", site() / "passwd");
  EXPECT_TRUE(std::holds_alternative<Forbidden>(store->lookup("/abs_out")));
  EXPECT_TRUE(std::holds_alternative<Forbidden>(store->lookup("/rel_out")));
  EXPECT_TRUE(std::holds_alternative<Forbidden>(store->lookup("/sub/rel_out2")));
  EXPECT_TRUE(std::holds_alternative<Forbidden>(store->lookup("/passwd")));
  // A directory symlink out: nothing beneath it is reachable, nor is it redirected to.
  fs::create_directory_symlink(tmp_.path(), site() / "up");
  EXPECT_TRUE(std::holds_alternative<Forbidden>(store->lookup("/up/secret")));
  EXPECT_TRUE(std::holds_alternative<Forbidden>(store->lookup("/up")));
  EXPECT_TRUE(std::holds_alternative<Forbidden>(store->lookup("/up/")));
  // The magic link to the root of the file system.
  fs::create_symlink("/proc/self/root/etc/passwd", site() / "magic");
  EXPECT_TRUE(std::holds_alternative<Forbidden>(store->lookup("/magic")));
}

TEST_P(StoreTest, SymlinksInsideTheRootAreFollowed) {
  write_file(site() / "sub" / "f.txt", "inside\n");
  fs::create_symlink("sub/f.txt", site() / "rel_in");
  fs::create_symlink("../sub/f.txt", site() / "sub" / "dotdot_in");
  fs::create_directory_symlink("sub", site() / "dirlink");
  auto store = open_store();
  for (const char* p : {"/rel_in", "/sub/dotdot_in", "/dirlink/f.txt"}) {
    auto obj = found(store->lookup(p));
    ASSERT_TRUE(obj) << p;
    EXPECT_EQ(obj->body, "inside\n") << p;
  }
  auto l = store->lookup("/dirlink");
  ASSERT_TRUE(std::holds_alternative<RedirectSlash>(l));
}

TEST_P(StoreTest, AbsoluteSymlinkIntoTheRoot) {
  write_file(site() / "f.txt", "inside\n");
  fs::create_symlink(site() / "f.txt", site() / "abs_in");
  auto store = open_store();
  const Lookup l = store->lookup("/abs_in");
  if (GetParam()) {
    // The realpath fallback can only judge where a link ends up.
    EXPECT_TRUE(found(l));
  } else {
    // RESOLVE_BENEATH refuses every absolute symlink: sites should use relative ones.
    EXPECT_TRUE(std::holds_alternative<Forbidden>(l));
  }
}

TEST_P(StoreTest, SymlinkLoopIsForbidden) {
  fs::create_symlink("loop_b", site() / "loop_a");
  fs::create_symlink("loop_a", site() / "loop_b");
  auto store = open_store();
  EXPECT_TRUE(std::holds_alternative<Forbidden>(store->lookup("/loop_a")));
}

TEST_P(StoreTest, FifoIsForbiddenAndDoesNotBlock) {
  ASSERT_EQ(::mkfifo((site() / "pipe").c_str(), 0644), 0);
  auto store = open_store();
  EXPECT_TRUE(std::holds_alternative<Forbidden>(store->lookup("/pipe")));
}

TEST_P(StoreTest, UnreadableFileIsForbidden) {
  if (::geteuid() == 0) GTEST_SKIP() << "root reads everything";
  write_file(site() / "private.txt", "no");
  fs::permissions(site() / "private.txt", fs::perms::none);
  auto store = open_store();
  EXPECT_TRUE(std::holds_alternative<Forbidden>(store->lookup("/private.txt")));
}

TEST_P(StoreTest, KnownDigestAndStableEtag) {
  write_file(site() / "hello.txt", "hello\n");
  auto store = open_store();
  auto a = found(store->lookup("/hello.txt"));
  ASSERT_TRUE(a);
  EXPECT_EQ(a->digest, kHelloDigest);
  EXPECT_EQ(a->etag, kHelloEtag);
  auto b = found(store->lookup("/hello.txt"));
  ASSERT_TRUE(b);
  EXPECT_EQ(a, b);  // served from the cache
  // A fresh store (another process, a restart) gives the same ETag.
  auto other = open_store();
  auto c = found(other->lookup("/hello.txt"));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->etag, kHelloEtag);
  EXPECT_EQ(c->digest, kHelloDigest);
}

TEST_P(StoreTest, EmptyFile) {
  write_file(site() / "empty", "");
  auto store = open_store();
  auto obj = found(store->lookup("/empty"));
  ASSERT_TRUE(obj);
  EXPECT_EQ(obj->size, 0u);
  EXPECT_EQ(obj->digest, sha256_repr_digest(""));
}

TEST_P(StoreTest, ChangedFileIsReDigested) {
  const fs::path p = site() / "hello.txt";
  write_file(p, "hello\n");
  auto store = open_store();
  auto a = found(store->lookup("/hello.txt"));
  ASSERT_TRUE(a);

  // Different size, written in place.
  write_file(p, "hello, world\n");
  auto b = found(store->lookup("/hello.txt"));
  ASSERT_TRUE(b);
  EXPECT_NE(b->digest, a->digest);
  EXPECT_NE(b->etag, a->etag);
  EXPECT_EQ(b->digest, sha256_repr_digest("hello, world\n"));
  EXPECT_EQ(b->body, "hello, world\n");

  // Same size, in place, mtime forced back to the old one: ctime still moves.
  struct stat before {};
  ASSERT_EQ(::stat(p.c_str(), &before), 0);
  write_file(p, "HELLO, WORLD\n");
  const struct timespec times[2] = {before.st_atim, before.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, p.c_str(), times, 0), 0);
  auto c = found(store->lookup("/hello.txt"));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->digest, sha256_repr_digest("HELLO, WORLD\n"));

  // Atomically replaced (new inode), the way deploy tools do it.
  write_file(site() / "tmp.txt", "replaced\n");
  fs::rename(site() / "tmp.txt", p);
  auto d = found(store->lookup("/hello.txt"));
  ASSERT_TRUE(d);
  EXPECT_EQ(d->digest, sha256_repr_digest("replaced\n"));

  // Deleted: gone from the store as well.
  fs::remove(p);
  EXPECT_TRUE(std::holds_alternative<NotFound>(store->lookup("/hello.txt")));
}

TEST_P(StoreTest, OpenStreamsTheSameBytes) {
  write_file(site() / "hello.txt", "hello\n");
  auto store = open_store();
  auto obj = found(store->lookup("/hello.txt"));
  ASSERT_TRUE(obj);
  const int fd = store->open(*obj);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(::fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
  EXPECT_NE(::fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
  EXPECT_EQ(read_fd(fd), "hello\n");
  ::close(fd);
}

TEST_P(StoreTest, OpenDetectsChange) {
  const fs::path p = site() / "hello.txt";
  write_file(p, "hello\n");
  auto store = open_store();
  auto obj = found(store->lookup("/hello.txt"));
  ASSERT_TRUE(obj);

  write_file(p, "changed since\n");
  errno = 0;
  EXPECT_EQ(store->open(*obj), -1);
  EXPECT_EQ(errno, ESTALE);

  // Replaced by a file of the same size: another inode, still stale.
  auto obj2 = found(store->lookup("/hello.txt"));
  ASSERT_TRUE(obj2);
  write_file(site() / "tmp.txt", "changed SINCE\n");
  fs::rename(site() / "tmp.txt", p);
  errno = 0;
  EXPECT_EQ(store->open(*obj2), -1);
  EXPECT_EQ(errno, ESTALE);

  // Replaced by a fifo: stale, and open() does not hang on it.
  auto obj3 = found(store->lookup("/hello.txt"));
  ASSERT_TRUE(obj3);
  fs::remove(p);
  ASSERT_EQ(::mkfifo(p.c_str(), 0644), 0);
  errno = 0;
  EXPECT_EQ(store->open(*obj3), -1);
  EXPECT_EQ(errno, ESTALE);

  // Gone.
  fs::remove(p);
  errno = 0;
  EXPECT_EQ(store->open(*obj3), -1);
  EXPECT_EQ(errno, ENOENT);
}

TEST_P(StoreTest, MemoryTierBySize) {
  write_file(site() / "small", std::string(16, 's'));
  write_file(site() / "exact", std::string(32, 'e'));
  write_file(site() / "large", std::string(33, 'l'));
  auto store = open_store(32);
  auto small = found(store->lookup("/small"));
  auto exact = found(store->lookup("/exact"));
  auto large = found(store->lookup("/large"));
  ASSERT_TRUE(small && exact && large);
  EXPECT_TRUE(small->in_memory);
  EXPECT_EQ(small->body, std::string(16, 's'));
  EXPECT_TRUE(exact->in_memory);
  EXPECT_EQ(exact->body.size(), 32u);
  EXPECT_FALSE(large->in_memory);
  EXPECT_TRUE(large->body.empty());
  EXPECT_EQ(large->size, 33u);
  EXPECT_EQ(large->digest, sha256_repr_digest(std::string(33, 'l')));

  // Memory tier off altogether.
  auto none = open_store(0);
  auto s = found(none->lookup("/small"));
  ASSERT_TRUE(s);
  EXPECT_FALSE(s->in_memory);
  EXPECT_TRUE(s->body.empty());
  EXPECT_EQ(s->digest, sha256_repr_digest(std::string(16, 's')));
}

TEST_P(StoreTest, LargeFileDigest) {
  std::string data(5 * 1024 * 1024 + 123, '\0');
  std::mt19937_64 rng(42);
  for (auto& c : data) c = static_cast<char>(rng());
  write_file(site() / "big.bin", data);
  auto store = open_store();
  auto obj = found(store->lookup("/big.bin"));
  ASSERT_TRUE(obj);
  EXPECT_EQ(obj->size, data.size());
  EXPECT_FALSE(obj->in_memory);
  EXPECT_TRUE(obj->body.empty());
  EXPECT_EQ(obj->digest, sha256_repr_digest(data));
  const int fd = store->open(*obj);
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(read_fd(fd) == data);
  ::close(fd);
}

TEST_P(StoreTest, ConcurrentLookups) {
  for (int i = 0; i < 8; ++i) {
    write_file(site() / ("f" + std::to_string(i)), std::string(1000 + i, 'a' + i));
  }
  auto store = open_store();
  std::vector<std::thread> threads;
  std::vector<int> failures(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 200; ++round) {
        const int i = (t + round) % 8;
        auto obj = found(store->lookup("/f" + std::to_string(i)));
        if (!obj || obj->size != static_cast<uint64_t>(1000 + i) ||
            obj->body != std::string(1000 + i, 'a' + i)) {
          ++failures[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 8; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;
}

// The revalidation window, on a clock the test moves by hand.
std::chrono::nanoseconds g_fake_now{0};
std::chrono::nanoseconds fake_now() { return g_fake_now; }
using std::chrono::milliseconds;

TEST_P(StoreTest, MemoryTierIsCheckedOncePerWindow) {
  const fs::path p = site() / "page.html";
  write_file(p, "first\n");
  auto store = open_store();
  store->set_clock_for_testing(&fake_now);
  store->set_revalidate_after(milliseconds(100));
  g_fake_now = milliseconds(1000);
  auto a = found(store->lookup("/page.html"));
  ASSERT_TRUE(a && a->in_memory);

  // Rewritten inside the window: the version checked last is served whole
  // (bytes and digest of the same read), without looking at the disk.
  write_file(p, "second, longer\n");
  g_fake_now = milliseconds(1099);
  auto b = found(store->lookup("/page.html"));
  ASSERT_TRUE(b);
  EXPECT_EQ(b, a);
  EXPECT_EQ(b->body, "first\n");
  EXPECT_EQ(b->digest, sha256_repr_digest("first\n"));

  // The window is over: checked again, the new version is read.
  g_fake_now = milliseconds(1100);
  auto c = found(store->lookup("/page.html"));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->body, "second, longer\n");
  EXPECT_EQ(c->digest, sha256_repr_digest("second, longer\n"));

  // A check that finds the file unchanged starts a new window from then.
  g_fake_now = milliseconds(1250);
  EXPECT_EQ(found(store->lookup("/page.html")), c);
  write_file(p, "third\n");
  g_fake_now = milliseconds(1349);
  EXPECT_EQ(found(store->lookup("/page.html")), c);
  g_fake_now = milliseconds(1350);
  auto d = found(store->lookup("/page.html"));
  ASSERT_TRUE(d);
  EXPECT_EQ(d->body, "third\n");

  // Deleted: served until the window ends, then gone.
  fs::remove(p);
  g_fake_now = milliseconds(1400);
  EXPECT_EQ(found(store->lookup("/page.html")), d);
  g_fake_now = milliseconds(1450);
  EXPECT_TRUE(std::holds_alternative<NotFound>(store->lookup("/page.html")));
  // And not served from memory again once recreated.
  write_file(p, "fourth\n");
  auto e = found(store->lookup("/page.html"));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->body, "fourth\n");
}

TEST_P(StoreTest, FilesNotInMemoryAreCheckedEveryTimeDespiteTheWindow) {
  const fs::path p = site() / "big.bin";
  write_file(p, std::string(64, 'a'));
  auto store = open_store(32);
  store->set_clock_for_testing(&fake_now);
  store->set_revalidate_after(milliseconds(100));
  g_fake_now = milliseconds(5000);
  auto a = found(store->lookup("/big.bin"));
  ASSERT_TRUE(a);
  ASSERT_FALSE(a->in_memory);
  write_file(p, std::string(65, 'b'));
  g_fake_now = milliseconds(5001);
  auto b = found(store->lookup("/big.bin"));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->size, 65u);
  EXPECT_EQ(b->digest, sha256_repr_digest(std::string(65, 'b')));
}

TEST_P(StoreTest, WindowZeroChecksEveryLookup) {
  const fs::path p = site() / "page.html";
  write_file(p, "first\n");
  auto store = open_store();
  store->set_clock_for_testing(&fake_now);
  store->set_revalidate_after(milliseconds(0));
  g_fake_now = milliseconds(1000);
  ASSERT_TRUE(found(store->lookup("/page.html")));
  write_file(p, "second, longer\n");
  auto b = found(store->lookup("/page.html"));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->body, "second, longer\n");
}

// ---- Bounds (store.hpp, "Bounds"): exact accounting of what is held.

bool needs_load(Store& store, std::string_view path) {
  return std::holds_alternative<NeedsLoad>(store.lookup(path, /*may_load=*/false));
}

TEST_P(StoreTest, MemoryBudgetEvictsTheLeastRecentlyUsedBody) {
  for (const char* n : {"a", "b", "c", "d"}) write_file(site() / n, std::string(1000, n[0]));
  auto store = open_store();
  store->set_memory_budget(3000);
  for (const char* n : {"/a", "/b", "/c"}) ASSERT_TRUE(found(store->lookup(n)));
  EXPECT_EQ(store->memory_bytes(), 3000u);
  EXPECT_EQ(store->entries(), 3u);
  EXPECT_EQ(store->evictions(), 0u);

  ASSERT_TRUE(found(store->lookup("/a")));  // a is now the most recent; b the least
  auto d = found(store->lookup("/d"));
  ASSERT_TRUE(d && d->in_memory);
  EXPECT_EQ(store->memory_bytes(), 3000u);
  EXPECT_EQ(store->entries(), 3u);
  EXPECT_EQ(store->evictions(), 1u);
  EXPECT_TRUE(needs_load(*store, "/b"));  // forgotten: read again on its next request
  EXPECT_FALSE(needs_load(*store, "/a"));
  EXPECT_FALSE(needs_load(*store, "/c"));
  EXPECT_FALSE(needs_load(*store, "/d"));

  // Reading b again evicts the least recent now (a: c and d were looked at since).
  auto b = found(store->lookup("/b"));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->body, std::string(1000, 'b'));
  EXPECT_EQ(store->memory_bytes(), 3000u);
  EXPECT_EQ(store->evictions(), 2u);
  EXPECT_TRUE(needs_load(*store, "/a"));
}

TEST_P(StoreTest, AFileLargerThanTheBudgetIsStreamedAndStillRemembered) {
  write_file(site() / "big", std::string(2000, 'x'));
  write_file(site() / "small", std::string(100, 's'));
  auto store = open_store();
  store->set_memory_budget(1000);
  auto big = found(store->lookup("/big"));
  ASSERT_TRUE(big);
  EXPECT_FALSE(big->in_memory);
  EXPECT_TRUE(big->body.empty());
  EXPECT_EQ(big->digest, sha256_repr_digest(std::string(2000, 'x')));
  ASSERT_TRUE(found(store->lookup("/small")));
  EXPECT_EQ(store->memory_bytes(), 100u);
  EXPECT_EQ(store->entries(), 2u);
  EXPECT_FALSE(needs_load(*store, "/big"));  // its digest is kept: no second read

  // Budget 0: nothing in memory, metadata still remembered.
  auto none = open_store();
  none->set_memory_budget(0);
  auto s = found(none->lookup("/small"));
  ASSERT_TRUE(s);
  EXPECT_FALSE(s->in_memory);
  EXPECT_EQ(none->memory_bytes(), 0u);
  EXPECT_EQ(none->entries(), 1u);
}

TEST_P(StoreTest, MaxEntriesBoundsWhatIsRemembered) {
  for (int i = 0; i < 5; ++i) write_file(site() / ("f" + std::to_string(i)), std::string(10, 'f'));
  write_file(site() / "big", std::string(100, 'b'));
  auto store = open_store(50);  // big is never held in memory, the others are
  store->set_max_entries(3);
  ASSERT_TRUE(found(store->lookup("/big")));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(found(store->lookup("/f" + std::to_string(i))));
  EXPECT_EQ(store->entries(), 3u);
  EXPECT_EQ(store->memory_bytes(), 30u);  // f2, f3, f4: big and f0, f1 were the oldest
  EXPECT_EQ(store->evictions(), 3u);
  EXPECT_TRUE(needs_load(*store, "/big"));
  EXPECT_TRUE(needs_load(*store, "/f1"));
  EXPECT_FALSE(needs_load(*store, "/f2"));
}

TEST_P(StoreTest, LoweringTheBudgetEvictsAtOnce) {
  for (const char* n : {"a", "b", "c"}) write_file(site() / n, std::string(1000, n[0]));
  auto store = open_store();
  for (const char* n : {"/a", "/b", "/c"}) ASSERT_TRUE(found(store->lookup(n)));
  EXPECT_EQ(store->memory_bytes(), 3000u);
  auto a = found(store->lookup("/a"));  // held by a "response in flight"
  store->set_memory_budget(1500);
  EXPECT_EQ(store->memory_bytes(), 1000u);  // b went (least recent), then c
  EXPECT_EQ(store->entries(), 1u);
  EXPECT_FALSE(needs_load(*store, "/a"));
  EXPECT_EQ(a->body, std::string(1000, 'a'));
  store->set_memory_budget(0);
  EXPECT_EQ(store->memory_bytes(), 0u);
  EXPECT_EQ(store->entries(), 0u);
  EXPECT_EQ(a->body, std::string(1000, 'a'));  // evicted, still whole for its holder
}

TEST_P(StoreTest, AccountingFollowsRewritesAndDeletions) {
  const fs::path p = site() / "f";
  write_file(p, std::string(100, 'a'));
  write_file(site() / "g", std::string(50, 'g'));
  auto store = open_store();
  ASSERT_TRUE(found(store->lookup("/f")));
  ASSERT_TRUE(found(store->lookup("/g")));
  EXPECT_EQ(store->memory_bytes(), 150u);
  write_file(p, std::string(300, 'b'));
  auto f = found(store->lookup("/f"));
  ASSERT_TRUE(f);
  EXPECT_EQ(f->body, std::string(300, 'b'));
  EXPECT_EQ(store->memory_bytes(), 350u);
  EXPECT_EQ(store->entries(), 2u);
  fs::remove(p);
  EXPECT_TRUE(std::holds_alternative<NotFound>(store->lookup("/f")));
  EXPECT_EQ(store->memory_bytes(), 50u);
  EXPECT_EQ(store->entries(), 1u);
  EXPECT_EQ(store->evictions(), 0u);  // replaced and deleted, not evicted
}

// A crawl far larger than the budget, from several threads at once: the
// bound holds after every lookup, and every answer is the file's own bytes.
TEST_P(StoreTest, BudgetHoldsUnderAConcurrentCrawl) {
  constexpr int kFiles = 64;
  for (int i = 0; i < kFiles; ++i) {
    write_file(site() / ("f" + std::to_string(i)), std::string(1000 + i, 'a' + i % 26));
  }
  auto store = open_store();
  store->set_memory_budget(8000);
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3 * kFiles; ++round) {
        const int i = (t * 17 + round) % kFiles;
        auto obj = found(store->lookup("/f" + std::to_string(i)));
        if (!obj || obj->body != std::string(1000 + i, 'a' + i % 26) ||
            store->memory_bytes() > 8000) {
          ++failures[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;
  EXPECT_LE(store->memory_bytes(), 8000u);
  EXPECT_GT(store->evictions(), 0u);
}

// ---- Out of descriptors (store.hpp, "Running out of descriptors").

// Lowers RLIMIT_NOFILE and fills every descriptor below it; undone at the end.
class DescriptorsExhausted {
 public:
  explicit DescriptorsExhausted(rlim_t limit) {
    ::getrlimit(RLIMIT_NOFILE, &saved_);
    set_limit(limit);
  }
  ~DescriptorsExhausted() {
    for (const int fd : held_) ::close(fd);
    ::setrlimit(RLIMIT_NOFILE, &saved_);
  }
  DescriptorsExhausted(const DescriptorsExhausted&) = delete;
  DescriptorsExhausted& operator=(const DescriptorsExhausted&) = delete;
  void set_limit(rlim_t limit) {
    struct rlimit lim = saved_;
    lim.rlim_cur = limit;
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lim), 0) << std::strerror(errno);
    for (int i = 0; i < 100'000; ++i) {  // bounded: the limit is far lower
      const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        ASSERT_EQ(errno, EMFILE);
        return;
      }
      held_.push_back(fd);
    }
    FAIL() << "could not exhaust descriptors";
  }

 private:
  struct rlimit saved_ {};
  std::vector<int> held_;
};

int highest_open_fd() {
  int highest = -1;
  for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
    highest = std::max(highest, std::stoi(e.path().filename().string()));
  }
  return highest;
}

int lowest_free_fd() {
  const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ::close(fd);
  return fd;
}

TEST_P(StoreTest, OutOfDescriptorsIsUnavailableNeverNotFound) {
  write_file(site() / "small", "small\n");
  write_file(site() / "big", std::string(1000, 'b'));
  auto store = open_store(100);  // big is streamed from its own descriptor
  auto big = found(store->lookup("/big"));
  ASSERT_TRUE(big);
  // The reserve is the store's last descriptor: the lowest free one is just past it.
  const int first_free = lowest_free_fd();
  {
    DescriptorsExhausted full(static_cast<rlim_t>(first_free));
    errno = 0;
    ASSERT_LT(::open("/dev/null", O_RDONLY | O_CLOEXEC), 0);
    ASSERT_EQ(errno, EMFILE);
    // Lookups and first reads borrow the reserve: the answers stay true.
    auto small = found(store->lookup("/small"));
    ASSERT_TRUE(small);
    EXPECT_EQ(small->body, "small\n");
    EXPECT_TRUE(found(store->lookup("/big")));
    EXPECT_TRUE(std::holds_alternative<NotFound>(store->lookup("/missing")));
    EXPECT_TRUE(std::holds_alternative<NotFound>(store->lookup("/no/such/dir")));
    // Streaming needs a descriptor of its own: EMFILE, for a 503.
    errno = 0;
    EXPECT_EQ(store->open(*big), -1);
    EXPECT_EQ(errno, EMFILE);

    // The reserve's own slot barred too: nothing can be opened, and nothing
    // is claimed missing.
    full.set_limit(static_cast<rlim_t>(first_free - 1));
    const Lookup l = store->lookup("/small");
    ASSERT_TRUE(std::holds_alternative<Unavailable>(l));
    EXPECT_EQ(std::get<Unavailable>(l).err, EMFILE);
    // (The realpath fallback resolves without a descriptor, so it can
    // still tell that a file is missing.)
    const Lookup m = store->lookup("/missing");
    if (GetParam()) {
      EXPECT_TRUE(std::holds_alternative<NotFound>(m));
    } else {
      ASSERT_TRUE(std::holds_alternative<Unavailable>(m));
      EXPECT_EQ(std::get<Unavailable>(m).err, EMFILE);
    }
  }
  // Descriptors are back: the first open takes the lost reserve back, and
  // the next exhaustion is handled as the first one was.
  EXPECT_TRUE(found(store->lookup("/small")));
  {
    DescriptorsExhausted full(static_cast<rlim_t>(highest_open_fd() + 1));
    EXPECT_TRUE(found(store->lookup("/small")));
    EXPECT_TRUE(std::holds_alternative<NotFound>(store->lookup("/missing")));
  }
}

// ---- One log line per burst (common/log/burst.hpp), as the replica uses it
// for files it cannot open.

TEST(LogBurst, OneLineToBeginOneToEndAndASummaryPerPeriodBetween) {
  using namespace std::chrono_literals;
  log::Burst b(10s, 1s);
  const log::Burst::Clock::time_point t0{1000s};
  EXPECT_FALSE(b.succeeded(t0).has_value());  // no burst: nothing to say
  auto r = b.failed(t0);
  EXPECT_TRUE(r.first);
  EXPECT_EQ(r.repeated, 0u);
  for (int i = 1; i <= 500; ++i) {  // 500 more within the period: silent
    r = b.failed(t0 + i * 10ms);
    EXPECT_FALSE(r.first);
    EXPECT_EQ(r.repeated, 0u);
    // Successes in between (the edge of a shortage) do not end it.
    EXPECT_FALSE(b.succeeded(t0 + i * 10ms + 5ms).has_value());
  }
  r = b.failed(t0 + 10s);  // a period after the first line: the count so far
  EXPECT_FALSE(r.first);
  EXPECT_EQ(r.repeated, 501u);
  b.failed(t0 + 11s);
  b.failed(t0 + 12s);
  EXPECT_TRUE(b.active());
  EXPECT_FALSE(b.succeeded(t0 + 12s + 999ms).has_value());
  // A success a settling time after the last failure: the end, with what went unlogged.
  EXPECT_EQ(b.succeeded(t0 + 13s), std::optional<uint64_t>(2));
  EXPECT_FALSE(b.active());
  EXPECT_FALSE(b.succeeded(t0 + 14s).has_value());
  EXPECT_TRUE(b.failed(t0 + 15s).first);  // the next burst begins with a full line again
  EXPECT_EQ(b.succeeded(t0 + 20s), std::optional<uint64_t>(0));
}

INSTANTIATE_TEST_SUITE_P(Resolve, StoreTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "RealpathFallback" : "Openat2";
                         });

}  // namespace
}  // namespace cdn::replica
