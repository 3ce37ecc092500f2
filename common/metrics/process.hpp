// SPDX-License-Identifier: MIT
// The process_* metrics every Prometheus client library exports (the names
// and meanings of client_golang's process collector), so that dashboards
// made for any exporter work here. Parsing is pure; read_process_stats()
// reads /proc (cheap: three small files and a directory listing).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "common/metrics/prometheus.hpp"

namespace cdn::metrics {

struct ProcessStats {
  double cpu_seconds = 0;  // user + system
  uint64_t resident_bytes = 0;
  uint64_t virtual_bytes = 0;
  uint64_t open_fds = 0;
  uint64_t max_fds = 0;           // the soft RLIMIT_NOFILE
  double start_time_seconds = 0;  // since the epoch
};

// From /proc/self/stat's text, /proc/stat's btime, the clock ticks per second
// and the page size; nullopt when the text is not such a line.
std::optional<ProcessStats> parse_proc_stat(std::string_view stat, int64_t boot_time,
                                            long ticks_per_second, long page_size);
// btime from /proc/stat's text; nullopt when absent.
std::optional<int64_t> parse_boot_time(std::string_view proc_stat);

// This process's figures now (zeros for what cannot be read).
ProcessStats read_process_stats();

// process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_max_fds,
// process_start_time_seconds.
void write_process_metrics(PrometheusWriter& w, const ProcessStats& s);

// cdn_build_info{version="..."} 1.
void write_build_info(PrometheusWriter& w, std::string_view version);

}  // namespace cdn::metrics
