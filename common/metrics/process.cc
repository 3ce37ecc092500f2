// SPDX-License-Identifier: MIT
#include "common/metrics/process.hpp"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <charconv>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace cdn::metrics {

namespace {

std::optional<uint64_t> number(std::string_view s) {
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

std::string slurp(const char* path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

}  // namespace

std::optional<ProcessStats> parse_proc_stat(std::string_view stat, int64_t boot_time,
                                            long ticks_per_second, long page_size) {
  // "pid (comm) state ppid ...": comm may hold blanks and parentheses, so
  // the fields are counted from the last ')'.
  const size_t close = stat.rfind(')');
  if (close == std::string_view::npos || ticks_per_second <= 0 || page_size <= 0) {
    return std::nullopt;
  }
  std::vector<std::string_view> fields;  // fields[0] is field 3 (state) of proc(5)
  size_t i = close + 1;
  while (i < stat.size()) {
    while (i < stat.size() && (stat[i] == ' ' || stat[i] == '\n')) ++i;
    size_t end = i;
    while (end < stat.size() && stat[end] != ' ' && stat[end] != '\n') ++end;
    if (end > i) fields.push_back(stat.substr(i, end - i));
    i = end;
  }
  if (fields.size() < 22) return std::nullopt;
  const auto utime = number(fields[14 - 3]), stime = number(fields[15 - 3]);
  const auto start = number(fields[22 - 3]), vsize = number(fields[23 - 3]);
  const auto rss = number(fields[24 - 3]);
  if (!utime || !stime || !start || !vsize || !rss) return std::nullopt;
  ProcessStats s;
  const auto ticks = static_cast<double>(ticks_per_second);
  s.cpu_seconds = static_cast<double>(*utime + *stime) / ticks;
  s.start_time_seconds = static_cast<double>(boot_time) + static_cast<double>(*start) / ticks;
  s.virtual_bytes = *vsize;
  s.resident_bytes = *rss * static_cast<uint64_t>(page_size);
  return s;
}

std::optional<int64_t> parse_boot_time(std::string_view proc_stat) {
  size_t pos = 0;
  while (pos < proc_stat.size()) {
    size_t nl = proc_stat.find('\n', pos);
    if (nl == std::string_view::npos) nl = proc_stat.size();
    const std::string_view line = proc_stat.substr(pos, nl - pos);
    if (line.starts_with("btime ")) {
      if (const auto v = number(line.substr(6))) return static_cast<int64_t>(*v);
      return std::nullopt;
    }
    pos = nl + 1;
  }
  return std::nullopt;
}

ProcessStats read_process_stats() {
  // btime never changes while we run: read once.
  static const int64_t boot = parse_boot_time(slurp("/proc/stat")).value_or(0);
  ProcessStats s = parse_proc_stat(slurp("/proc/self/stat"), boot, ::sysconf(_SC_CLK_TCK),
                                   ::sysconf(_SC_PAGESIZE))
                       .value_or(ProcessStats{});
  if (DIR* d = ::opendir("/proc/self/fd")) {
    uint64_t n = 0;
    while (const dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') ++n;
    }
    ::closedir(d);
    s.open_fds = n > 0 ? n - 1 : 0;  // not counting the directory's own descriptor
  }
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0) s.max_fds = lim.rlim_cur;
  return s;
}

void write_process_metrics(PrometheusWriter& w, const ProcessStats& s) {
  w.metric("process_cpu_seconds_total", Type::Counter, "User and system CPU time spent in seconds.",
           s.cpu_seconds);
  w.metric("process_resident_memory_bytes", Type::Gauge, "Resident memory size in bytes.",
           s.resident_bytes);
  w.metric("process_virtual_memory_bytes", Type::Gauge, "Virtual memory size in bytes.",
           s.virtual_bytes);
  w.metric("process_open_fds", Type::Gauge, "Number of open file descriptors.", s.open_fds);
  w.metric("process_max_fds", Type::Gauge, "Maximum number of open file descriptors.", s.max_fds);
  w.metric("process_start_time_seconds", Type::Gauge,
           "Start time of the process since unix epoch in seconds.", s.start_time_seconds);
}

void write_build_info(PrometheusWriter& w, std::string_view version) {
  w.family("cdn_build_info", Type::Gauge, "Always 1; the version of the running build.");
  w.sample({{"version", version}}, uint64_t{1});
}

}  // namespace cdn::metrics
