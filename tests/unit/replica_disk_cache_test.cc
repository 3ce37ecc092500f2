// SPDX-License-Identifier: MIT
// The edge cache's disk store: atomic commit, reload with digest checks,
// corrupt entries dropped, LRU eviction, memory tier.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/purge/purge.hpp"
#include "daemons/replicad/disk_cache.hpp"

namespace cdn::replica {
namespace {

namespace fs = std::filesystem;

class DiskCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cdn-dc-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  DiskCache::Options options(uint64_t max = 1 << 20, uint64_t memory = 1 << 20) {
    DiskCache::Options o;
    o.dir = dir_ + "/cache";
    o.max_bytes = max;
    o.memory_bytes = memory;
    o.memory_object_limit = 1024;
    o.block_size = 1;  // byte counts, not a file system's blocks
    return o;
  }

  static const DiskCache::Entry* put(DiskCache& c, const std::string& key,
                                     const std::string& body) {
    auto w = c.begin();
    EXPECT_TRUE(w);
    EXPECT_TRUE(w->write(body.data(), body.size()));
    return commit_as(c, *w, key);
  }

  // Finishes a body received so far and stores it under `key`.
  static const DiskCache::Entry* commit_as(DiskCache& c, DiskCache::Writer& w,
                                           const std::string& key) {
    w.finish();
    EntryMeta m;
    m.key = key;
    m.stored.response_time = 1000;
    m.content_type = "text/plain";
    return c.commit(w, m);
  }

  static std::string read_fd(int fd) {
    std::string out;
    char buf[4096];
    ssize_t n;
    // pread: a dup'd descriptor shares its offset (the server reads by offset too).
    while ((n = ::pread(fd, buf, sizeof buf, static_cast<off_t>(out.size()))) > 0) {
      out.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return out;
  }

  std::string dir_;
};

TEST_F(DiskCacheTest, CommitFindAndReload) {
  const std::string big(5000, 'x');
  {
    DiskCache c(options());
    const auto* e = put(c, "/a.txt", "hello");
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->meta.size, 5U);
    EXPECT_TRUE(e->object->in_memory);
    EXPECT_EQ(e->object->body, "hello");
    EXPECT_EQ(e->meta.digest, "sha-256=:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=:");
    EXPECT_EQ(e->meta.etag, "\"2cf24dba5fb0a30e\"");
    const auto* b = put(c, "/big?x=1", big);
    ASSERT_NE(b, nullptr);
    EXPECT_FALSE(b->object->in_memory);
    EXPECT_EQ(read_fd(c.open(*b)), big);
    EXPECT_EQ(c.objects(), 2U);
    EXPECT_EQ(c.bytes(), 5005U);
    EXPECT_EQ(c.find("/nope"), nullptr);
  }
  DiskCache again(options());
  EXPECT_EQ(again.objects(), 2U);
  EXPECT_EQ(again.corrupt_dropped(), 0U);
  const auto* a = again.find("/a.txt");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->object->body, "hello");
  EXPECT_EQ(a->meta.stored.response_time, 1000);
  const auto* b = again.find("/big?x=1");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(read_fd(again.open(*b)), big);
}

// The files in the cache's tmp/ now.
size_t temp_files(const std::string& cache_dir) {
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(cache_dir + "/tmp")) n += e.is_regular_file();
  return n;
}

TEST_F(DiskCacheTest, SpareTempFileIsTakenByTheNextWriterAndRemovedAtClose) {
  const std::string cache = dir_ + "/cache";
  const std::string body(5000, 's');
  {
    DiskCache c(options());
    EXPECT_EQ(temp_files(cache), 0U);  // none until asked for
    c.keep_spare();
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (temp_files(cache) == 0 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_EQ(temp_files(cache), 1U);
    auto w = c.begin(body.size());
    ASSERT_TRUE(w);
    EXPECT_TRUE(w->on_disk());
    EXPECT_EQ(temp_files(cache), 1U);  // the spare is the writer's file
    ASSERT_TRUE(w->write(body.data(), body.size()));
    EXPECT_FALSE(w->in_memory());  // its length is past memory_object_limit from the start
    const auto* e = commit_as(c, *w, "/spare");
    ASSERT_NE(e, nullptr);
    c.settle();
    EXPECT_EQ(read_fd(c.open(*e)), body);
    EXPECT_EQ(temp_files(cache), 0U);  // renamed into place
    // Asked for again: one spare, left when the cache closes.
    c.keep_spare();
    c.keep_spare();
    while (temp_files(cache) == 0 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_EQ(temp_files(cache), 1U);
  }
  EXPECT_EQ(temp_files(cache), 0U);
  DiskCache again(options());
  const auto* e = again.find("/spare");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(read_fd(again.open(*e)), body);
}

TEST_F(DiskCacheTest, CorruptEntriesAreDroppedAtLoad) {
  {
    DiskCache c(options());
    put(c, "/good", "good body");
    put(c, "/flipped", "original body");
    put(c, "/short", "a longer body here");
    put(c, "/badmeta", "whatever");
  }
  for (const auto& e : fs::directory_iterator(dir_ + "/cache")) {
    if (e.path().extension() != ".meta") continue;
    std::ifstream in(e.path());
    const std::string meta((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    fs::path body = e.path();
    body.replace_extension(".body");
    if (meta.find("\"/flipped\"") != std::string::npos) {
      std::ofstream(body, std::ios::binary) << "ORIGINAL BODY";  // same size, other bytes
    } else if (meta.find("\"/short\"") != std::string::npos) {
      fs::resize_file(body, 3);
    } else if (meta.find("\"/badmeta\"") != std::string::npos) {
      std::ofstream(e.path()) << "{not json";
    }
  }
  std::ofstream(dir_ + "/cache/tmp/leftover") << "half a body";
  DiskCache c(options());
  EXPECT_EQ(c.objects(), 1U);
  EXPECT_EQ(c.corrupt_dropped(), 3U);
  EXPECT_NE(c.find("/good"), nullptr);
  EXPECT_EQ(c.find("/flipped"), nullptr);
  EXPECT_FALSE(fs::exists(dir_ + "/cache/tmp/leftover"));
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir_ + "/cache")) files += e.is_regular_file();
  EXPECT_EQ(files, 2U);  // the good entry's body and meta only
}

// A warm restart next to entries of older formats (1, and both "2"s of the
// development branches): they are dropped and counted, never read as ours.
TEST_F(DiskCacheTest, OlderFormatsAreDroppedAtLoad) {
  {
    DiskCache c(options());
    put(c, "/new", "kept");
    put(c, "/v1", "one");
    put(c, "/v2a", "two");
    put(c, "/v2b", "two");
  }
  for (const auto& e : fs::directory_iterator(dir_ + "/cache")) {
    if (e.path().extension() != ".meta") continue;
    std::ifstream in(e.path());
    std::string meta((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    in.close();
    std::string old;
    if (meta.find("\"/v1\"") != std::string::npos) {
      old = "1,\"cache_control\":\"max-age=9\",\"date\":-1,\"expires\":-1,\"age\":0";
    } else if (meta.find("\"/v2a\"") != std::string::npos) {
      old = "2,\"cache_control\":\"max-age=9\",\"date\":-1,\"expires\":-1,\"age\":0";
    } else if (meta.find("\"/v2b\"") != std::string::npos) {
      old = "2";
    } else {
      continue;
    }
    const size_t at = meta.find("\"version\":");
    ASSERT_NE(at, std::string::npos);
    const size_t end = meta.find_first_of(",}", at);
    meta.replace(at + 10, end - at - 10, old);
    std::ofstream(e.path()) << meta;
  }
  DiskCache c(options());
  EXPECT_EQ(c.objects(), 1U);
  EXPECT_EQ(c.outdated_dropped(), 3U);
  EXPECT_EQ(c.corrupt_dropped(), 0U);
  EXPECT_NE(c.find("/new"), nullptr);
  EXPECT_EQ(c.find("/v1"), nullptr);
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir_ + "/cache")) files += e.is_regular_file();
  EXPECT_EQ(files, 2U);  // the current entry's body and meta only
}

TEST_F(DiskCacheTest, EvictsLeastRecentlyUsed) {
  DiskCache c(options(3000, 0));
  const std::string kb(1000, 'k');
  put(c, "/1", kb);
  put(c, "/2", kb);
  put(c, "/3", kb);
  EXPECT_NE(c.find("/1"), nullptr);  // /2 is now the least recently used
  put(c, "/4", kb);
  EXPECT_EQ(c.objects(), 3U);
  EXPECT_EQ(c.evictions(), 1U);
  EXPECT_EQ(c.peek("/2"), nullptr);
  EXPECT_NE(c.peek("/1"), nullptr);
  EXPECT_LE(c.bytes(), 3000U);
  EXPECT_EQ(c.memory_bytes(), 0U);  // memory tier of 0 bytes holds nothing
  // Larger than the whole cache: not stored, nothing evicted for it.
  auto w = c.begin();
  const std::string huge(4000, 'h');
  ASSERT_TRUE(w->write(huge.data(), huge.size()));
  w->finish();
  EntryMeta m;
  m.key = "/huge";
  EXPECT_EQ(c.commit(*w, m), nullptr);
  EXPECT_EQ(c.objects(), 3U);
  // Never on disk (no room within max_bytes): still servable from memory.
  EXPECT_FALSE(w->on_disk());
  EXPECT_EQ(w->memory(), huge);
  EXPECT_EQ(c.disk_bytes(), 3000U);
}

// Bodies being received count against max_bytes: the entries make room as
// they grow, and what the bodies in flight cannot fit is held in memory
// (within spill_limit, shared by every writer), never on disk.
TEST_F(DiskCacheTest, BodiesInFlightCountAgainstTheBound) {
  DiskCache::Options o = options(3000, 0);
  o.spill_limit = 2500;
  DiskCache c(o);
  const std::string kb(1000, 'k');
  put(c, "/1", kb);
  put(c, "/2", kb);
  put(c, "/3", kb);
  auto a = c.begin();
  ASSERT_TRUE(a->write(kb.data(), kb.size()));
  EXPECT_EQ(c.objects(), 2U);  // /1 made room before the byte hit the disk
  EXPECT_LE(c.disk_bytes(), 3000U);
  ASSERT_TRUE(a->write(kb.data(), kb.size()));
  auto b = c.begin();
  ASSERT_TRUE(b->write(kb.data(), kb.size()));
  EXPECT_EQ(c.objects(), 0U);
  EXPECT_EQ(c.disk_bytes(), 3000U);
  EXPECT_TRUE(a->on_disk() && b->on_disk());
  // No room left beside the others: b goes on in memory.
  ASSERT_TRUE(b->write(kb.data(), kb.size()));
  EXPECT_FALSE(b->on_disk());
  EXPECT_EQ(c.disk_bytes(), 2000U);
  EXPECT_EQ(c.spilled_bytes(), 2000U);
  // A third writer spills at once, and past spill_limit (all writers
  // together) it fails rather than grow memory.
  auto d = c.begin();
  ASSERT_TRUE(d->write(kb.data(), 400));
  EXPECT_EQ(c.disk_bytes(), 2400U);
  EXPECT_FALSE(d->write(kb.data(), kb.size()));
  // Answering from a spilled body keeps its memory counted until the
  // last answer lets the Object go.
  b->finish();
  auto served = b->object();
  EXPECT_EQ(served->body.size(), 2000U);
  b.reset();
  EXPECT_EQ(c.spilled_bytes(), 2000U);
  served.reset();
  EXPECT_EQ(c.spilled_bytes(), 0U);
  ASSERT_NE(commit_as(c, *a, "/a"), nullptr);
  a.reset();
  EXPECT_EQ(c.disk_bytes(), 2400U);  // /a's entry and d's bytes
  d.reset();
  EXPECT_EQ(c.disk_bytes(), 2000U);
}

// A body's Content-Length is counted at once: a second body that cannot
// have room for all of it never touches the disk (held in memory, within
// spill_limit), rather than pass the bound or be cut halfway.
TEST_F(DiskCacheTest, ContentLengthIsReservedAtBegin) {
  DiskCache::Options o = options(3000, 0);
  o.spill_limit = 4000;
  DiskCache c(o);
  put(c, "/1", std::string(1000, '1'));
  auto a = c.begin(2000);
  ASSERT_TRUE(a);
  EXPECT_TRUE(a->on_disk());
  EXPECT_EQ(c.disk_bytes(), 3000U);  // /1 and a's 2000 before a byte came
  auto b = c.begin(1500);
  ASSERT_TRUE(b);
  EXPECT_FALSE(b->on_disk());  // 2000 + 1500 > 3000: no eviction could help
  EXPECT_EQ(c.objects(), 1U);  // so none was made
  EXPECT_EQ(c.disk_bytes(), 3000U);
  const std::string body(1500, 'b');
  ASSERT_TRUE(b->write(body.data(), body.size()));
  EXPECT_EQ(c.disk_bytes(), 3000U);
  EXPECT_GE(c.spilled_bytes(), 1500U);
  // /1 makes room for /2; larger than the whole cache: not reserved,
  // nothing evicted for it.
  put(c, "/2", std::string(500, '2'));
  EXPECT_EQ(c.peek("/1"), nullptr);
  auto h = c.begin(4000);
  EXPECT_FALSE(h->on_disk());
  EXPECT_EQ(c.objects(), 1U);
  // Within its reservation a body costs nothing more as it arrives.
  const std::string half(1000, 'a');
  ASSERT_TRUE(a->write(half.data(), half.size()));
  ASSERT_TRUE(a->write(half.data(), half.size()));
  EXPECT_EQ(c.disk_bytes(), 2500U);
  ASSERT_NE(commit_as(c, *a, "/a"), nullptr);
  a.reset();
  EXPECT_EQ(c.disk_bytes(), 2500U);  // /2 and /a
}

// An evicted or replaced body keeps its blocks while an answer reads it
// (an unlinked file is freed with its last descriptor): its bytes stay
// counted until the last Object holding it goes, and eviction passes over
// entries being read, which would free nothing.
TEST_F(DiskCacheTest, BodiesBeingReadStayCountedUntilTheLastReaderGoes) {
  DiskCache c(options(3000, 0));
  const std::string kb(1000, 'k');
  put(c, "/1", kb);
  put(c, "/2", kb);
  put(c, "/3", kb);
  // An answer reads /1 (the least recently used): /2 goes instead.
  std::shared_ptr<const Object> reading = c.peek("/1")->object;
  put(c, "/4", kb);
  EXPECT_NE(c.peek("/1"), nullptr);
  EXPECT_EQ(c.peek("/2"), nullptr);
  EXPECT_EQ(c.disk_bytes(), 3000U);
  // Replaced while read: the old file's bytes count until the answer ends.
  ASSERT_NE(put(c, "/1", std::string(500, 'n')), nullptr);
  EXPECT_EQ(c.released_open_bytes(), 1000U);
  EXPECT_EQ(c.peek("/3"), nullptr);  // made room for the new /1 beside the old
  EXPECT_EQ(c.disk_bytes(), 2500U);
  // A copy of the Object (the memory tier makes them) holds it as well.
  auto copy = std::make_shared<Object>(*reading);
  reading.reset();
  EXPECT_EQ(c.released_open_bytes(), 1000U);
  copy.reset();
  EXPECT_EQ(c.released_open_bytes(), 0U);
  EXPECT_EQ(c.disk_bytes(), 1500U);
  // Everything being read: a new body has no room, and nothing is evicted.
  auto r1 = c.peek("/1")->object;
  auto r4 = c.peek("/4")->object;
  auto w = c.begin(2000);
  EXPECT_FALSE(w->on_disk());
  EXPECT_EQ(c.objects(), 2U);
}

// A body streamed to clients while it is received, then spilled (no room
// left) or dropped: its file is unlinked but the clients still read it.
TEST_F(DiskCacheTest, AFileLetGoWhileStreamedStaysCounted) {
  DiskCache c(options(3000, 0));
  const std::string kb(1000, 'k');
  auto a = c.begin();
  ASSERT_TRUE(a->write(kb.data(), kb.size()));
  auto streaming = a->hold();  // what a streaming answer's Object holds
  auto b = c.begin();
  ASSERT_TRUE(b->write(kb.data(), kb.size()));
  ASSERT_TRUE(b->write(kb.data(), kb.size()));
  ASSERT_TRUE(a->write(kb.data(), kb.size()));  // no room: a goes on in memory
  EXPECT_FALSE(a->on_disk());
  EXPECT_EQ(c.disk_bytes(), 3000U);  // a's first 1000 are still being read
  streaming.reset();
  EXPECT_EQ(c.disk_bytes(), 2000U);
  auto reader = b->hold();
  b.reset();  // never committed (the origin broke off)
  EXPECT_EQ(c.disk_bytes(), 2000U);
  reader.reset();
  EXPECT_EQ(c.disk_bytes(), 0U);
}

// An entry costs its blocks and a block for its meta: tiny entries cannot
// fill a disk far past max_bytes.
TEST_F(DiskCacheTest, TinyEntriesCostTheirBlocks) {
  DiskCache::Options o = options(64 * 1024, 0);
  o.block_size = 4096;
  DiskCache c(o);
  for (int i = 0; i < 40; ++i) put(c, "/t?" + std::to_string(i), "x");
  EXPECT_EQ(c.objects(), 8U);  // 64 KiB / (4 KiB + 4 KiB)
  EXPECT_EQ(c.disk_bytes(), 64U * 1024);
  EXPECT_EQ(c.bytes(), 8U);
}

TEST_F(DiskCacheTest, RefreshKeepsBodyAndPersists) {
  {
    DiskCache c(options());
    put(c, "/r", "body");
    cache::Stored s;
    s.headers = {{"Cache-Control", "max-age=99"}, {"X-Kept", "a"}};
    s.response_time = 5000;
    // A 304 refreshes the variant it was asked about (the same id); another is none of ours.
    s.variant = "accept-encoding: gzip\n";
    EXPECT_EQ(c.refresh("/r", s), nullptr);
    s.variant = "";
    const auto* e = c.refresh("/r", s);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->object->body, "body");
  }
  DiskCache c(options());
  const auto* e = c.find("/r");
  ASSERT_NE(e, nullptr);
  ASSERT_EQ(e->meta.stored.headers.size(), 2U);
  EXPECT_EQ(e->meta.stored.headers[0].name, "Cache-Control");
  EXPECT_EQ(e->meta.stored.headers[0].value, "max-age=99");
  EXPECT_EQ(e->meta.stored.headers[1].value, "a");
  EXPECT_EQ(e->meta.stored.variant, "");
  EXPECT_EQ(e->meta.stored.response_time, 5000);
}

}  // namespace
// ------------------------------------------------------------ variants, entry bound

using H = std::vector<http::Header>;

// Stores `body` for `key` as the response (Vary: Accept-Encoding) to a
// request with this Accept-Encoding ("-": none).
const DiskCache::Entry* put_variant(DiskCache& c, const std::string& key, const std::string& ae,
                                    const std::string& body, int64_t at = 1000) {
  auto w = c.begin();
  EXPECT_TRUE(w);
  EXPECT_TRUE(w->write(body.data(), body.size()));
  w->finish();
  EntryMeta m;
  m.key = key;
  m.stored.response_time = at;
  m.stored.headers = {{"Vary", "Accept-Encoding"}, {"Surrogate-Key", "t" + key}};
  const H req = ae == "-" ? H{} : H{{"Accept-Encoding", ae}};
  m.stored.variant = cache::variant_key(m.stored.headers, req).value_or("");
  return c.commit(*w, m);
}

H ae(const std::string& v) { return {{"Accept-Encoding", v}}; }

std::string body_of(const DiskCache::Entry* e) {
  if (e == nullptr) return "(none)";
  return e->object->in_memory ? e->object->body : "(disk)";
}

TEST_F(DiskCacheTest, SeveralVariantsOfOneUrlEachSelected) {
  DiskCache c(options());
  ASSERT_NE(put_variant(c, "/v", "gzip", "zipped"), nullptr);
  ASSERT_NE(put_variant(c, "/v", "br, gzip", "brotli"), nullptr);
  ASSERT_NE(put_variant(c, "/v", "-", "plain"), nullptr);
  EXPECT_EQ(c.objects(), 3U);
  EXPECT_EQ(body_of(c.find("/v", ae("gzip"))), "zipped");
  EXPECT_EQ(body_of(c.find("/v", ae("GZIP , br"))), "brotli");
  EXPECT_EQ(body_of(c.find("/v")), "plain");
  EXPECT_EQ(c.find("/v", ae("zstd")), nullptr);
  EXPECT_TRUE(c.holds("/v"));
  // Stored again: replaces that variant only.
  ASSERT_NE(put_variant(c, "/v", "gzip", "zipped2"), nullptr);
  EXPECT_EQ(c.objects(), 3U);
  EXPECT_EQ(body_of(c.find("/v", ae("gzip"))), "zipped2");
  // One variant erased, then the whole URL.
  c.erase("/v", c.peek("/v", ae("br,gzip"))->meta.stored.variant);
  EXPECT_EQ(c.find("/v", ae("br,gzip")), nullptr);
  EXPECT_EQ(c.objects(), 2U);
  c.erase_all("/v");
  EXPECT_EQ(c.objects(), 0U);
  EXPECT_FALSE(c.holds("/v"));
  c.settle();
  size_t files = 0;
  for (const auto& f : fs::directory_iterator(dir_ + "/cache")) files += f.is_regular_file();
  EXPECT_EQ(files, 0U);
}

TEST_F(DiskCacheTest, MaxVariantsDropsTheUrlsLeastRecentlyUsed) {
  auto o = options();
  o.max_variants = 2;
  DiskCache c(o);
  put_variant(c, "/v", "a", "A");
  put_variant(c, "/v", "b", "B");
  put_variant(c, "/w", "a", "other url");
  ASSERT_NE(c.find("/v", ae("a")), nullptr);  // b is now the URL's least recently used
  put_variant(c, "/v", "c", "C");
  EXPECT_EQ(c.find("/v", ae("b")), nullptr);
  EXPECT_EQ(body_of(c.find("/v", ae("a"))), "A");
  EXPECT_EQ(body_of(c.find("/v", ae("c"))), "C");
  EXPECT_EQ(body_of(c.find("/w", ae("a"))), "other url");
  EXPECT_EQ(c.objects(), 3U);
  EXPECT_EQ(c.evictions(), 1U);
}

// Every variant is an entry of its own on disk: its blocks count, and a
// variant dropped (past max_variants) or purged with its URL while an
// answer reads it stays counted until that answer ends.
TEST_F(DiskCacheTest, VariantsCountTheirBlocksUntilTheLastReaderGoes) {
  auto o = options(3000, 0);
  o.max_variants = 2;
  DiskCache c(o);
  const std::string kb(1000, 'k');
  ASSERT_NE(put_variant(c, "/v", "a", kb), nullptr);
  ASSERT_NE(put_variant(c, "/v", "b", kb), nullptr);
  EXPECT_EQ(c.disk_bytes(), 2000U);
  // An answer reads variant a (peek: not marked as used), the URL's least
  // recently used: a third variant drops it, its file still counted.
  std::shared_ptr<const Object> reading_a = c.peek("/v", ae("a"))->object;
  ASSERT_NE(put_variant(c, "/v", "c", kb), nullptr);
  EXPECT_EQ(c.peek("/v", ae("a")), nullptr);
  EXPECT_EQ(c.objects(), 2U);
  EXPECT_EQ(c.released_open_bytes(), 1000U);
  EXPECT_EQ(c.disk_bytes(), 3000U);
  // Full: another URL makes room by evicting b, the least recently used
  // entry nobody reads.
  ASSERT_NE(put_variant(c, "/w", "a", kb), nullptr);
  EXPECT_EQ(c.peek("/v", ae("b")), nullptr);
  EXPECT_NE(c.peek("/v", ae("c")), nullptr);
  EXPECT_EQ(c.disk_bytes(), 3000U);
  // Every variant of the URL purged, c while it is read.
  std::shared_ptr<const Object> reading_c = c.peek("/v", ae("c"))->object;
  c.erase_all("/v");
  EXPECT_FALSE(c.holds("/v"));
  EXPECT_EQ(c.released_open_bytes(), 2000U);
  EXPECT_EQ(c.disk_bytes(), 3000U);
  // Nothing can be evicted for a body while those are read.
  auto w = c.begin(1500);
  EXPECT_FALSE(w->on_disk());
  w.reset();
  reading_a.reset();
  reading_c.reset();
  EXPECT_EQ(c.released_open_bytes(), 0U);
  EXPECT_EQ(c.disk_bytes(), 1000U);  // /w
}

TEST_F(DiskCacheTest, WarmRestartFindsEveryVariant) {
  {
    DiskCache c(options());
    put_variant(c, "/v?q=1", "gzip", "zipped");
    put_variant(c, "/v?q=1", "br", "brotli");
    put_variant(c, "/v?q=1", "-", "plain");
  }
  DiskCache again(options());
  EXPECT_EQ(again.objects(), 3U);
  EXPECT_EQ(again.corrupt_dropped(), 0U);
  EXPECT_EQ(body_of(again.find("/v?q=1", ae("gzip"))), "zipped");
  EXPECT_EQ(body_of(again.find("/v?q=1", ae("br"))), "brotli");
  EXPECT_EQ(body_of(again.find("/v?q=1")), "plain");
}

TEST_F(DiskCacheTest, AVariantFiledUnderItsKeyBeforeVariantsIsMovedToItsOwnName) {
  const fs::path dir = dir_ + "/cache";
  auto regular = [&] {
    std::vector<fs::path> out;
    for (const auto& f : fs::directory_iterator(dir)) {
      if (f.is_regular_file()) out.push_back(f.path());
    }
    return out;
  };
  std::string stem;  // the name of the key alone, as every entry had before variants
  {
    DiskCache c(options());
    put(c, "/old", "x");
    c.settle();  // its files are the cache's thread's to make
    for (const auto& p : regular()) stem = p.stem().string();
    c.erase("/old", "");
    put_variant(c, "/old", "gzip", "zipped");
  }
  const auto files = regular();
  ASSERT_EQ(files.size(), 2U);
  for (const auto& p : files) {
    ASSERT_NE(p.stem().string(), stem);
    fs::rename(p, dir / (stem + p.extension().string()));
  }
  {
    DiskCache again(options());
    EXPECT_EQ(again.corrupt_dropped(), 0U);
    EXPECT_EQ(body_of(again.find("/old", ae("gzip"))), "zipped");
  }
  DiskCache third(options());  // and it stays found under its own name
  EXPECT_EQ(body_of(third.find("/old", ae("gzip"))), "zipped");
  for (const auto& p : regular()) EXPECT_NE(p.stem().string(), stem);
}

TEST_F(DiskCacheTest, PurgeOfAUrlOrTagRemovesEveryVariant) {
  DiskCache c(options());
  put_variant(c, "/p", "gzip", "1");
  put_variant(c, "/p", "br", "2");
  put_variant(c, "/p?x", "br", "3");
  put_variant(c, "/q", "br", "4");
  purge::Request r;
  r.scope = purge::Scope::Url;
  r.target = "/p?x";
  EXPECT_EQ(c.purge(r, 0), 1U);
  r.target = "/p";
  EXPECT_EQ(c.purge(r, 1), 2U);
  EXPECT_FALSE(c.holds("/p"));
  EXPECT_NE(c.find("/q", ae("br")), nullptr);
  r.scope = purge::Scope::Tag;
  r.tags = {"t/q"};
  EXPECT_EQ(c.purge(r, 2), 1U);
  EXPECT_EQ(c.objects(), 0U);
}

TEST_F(DiskCacheTest, EntryBoundEvictsLeastRecentlyUsed) {
  auto o = options();
  o.max_entries = 3;
  DiskCache c(o);
  put(c, "/1", "a");
  put(c, "/2", "b");
  put(c, "/3", "c");
  const uint64_t three = c.index_bytes();
  EXPECT_GT(three, 3 * sizeof(DiskCache::Entry));
  ASSERT_NE(c.find("/1"), nullptr);
  put(c, "/4", "d");
  EXPECT_EQ(c.objects(), 3U);
  EXPECT_EQ(c.peek("/2"), nullptr);
  EXPECT_NE(c.peek("/1"), nullptr);
  EXPECT_EQ(c.evictions(), 1U);
  for (int i = 0; i < 100; ++i) put(c, "/bust?" + std::to_string(i), "x");
  EXPECT_EQ(c.objects(), 3U);
  EXPECT_LT(c.index_bytes(), three * 2);
  EXPECT_TRUE(c.settle().empty());
  size_t files = 0;
  for (const auto& f : fs::directory_iterator(dir_ + "/cache")) files += f.is_regular_file();
  EXPECT_EQ(files, 6U);
  // The bound holds at start too.
  o.max_entries = 2;
  DiskCache again(o);
  EXPECT_EQ(again.objects(), 2U);
  c.erase_all("/nothing");
  EXPECT_EQ(c.objects(), 3U);
}

}  // namespace cdn::replica

namespace cdn::replica {
namespace {

class DiskCachePurgeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cdn-dcp-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  DiskCache::Options options() {
    DiskCache::Options o;
    o.dir = dir_ + "/cache";
    return o;
  }
  static void put(DiskCache& c, const std::string& key, const std::string& tags,
                  int64_t response_time = 1000) {
    auto w = c.begin();
    ASSERT_TRUE(w);
    ASSERT_TRUE(w->write(key.data(), key.size()));
    w->finish();
    EntryMeta m;
    m.key = key;
    m.stored.response_time = response_time;
    m.stored.headers = {{"Surrogate-Key", tags}, {"Cache-Tag", "k" + key.substr(1, 1)}};
    ASSERT_NE(c.commit(*w, m), nullptr);
  }
  static void wait_removed(const DiskCache& c) {
    for (int i = 0; i < 2000 && c.purged_files_pending() > 0; ++i) ::usleep(1000);
    ASSERT_EQ(c.purged_files_pending(), 0U);
  }
  size_t files() const {
    size_t n = 0;
    for (const auto& e : fs::directory_iterator(dir_ + "/cache")) n += e.is_regular_file();
    return n;
  }
  std::string dir_;
};

TEST_F(DiskCachePurgeTest, HardPurgeGoesAtOnceItsFilesSoon) {
  DiskCache c(options());
  put(c, "/a", "red all");
  put(c, "/b", "blue, all");
  put(c, "/c", "red");
  purge::Request r;
  r.scope = purge::Scope::Tag;
  r.tags = {"red"};
  EXPECT_EQ(c.purge(r, 0), 2U);
  EXPECT_EQ(c.find("/a"), nullptr);
  EXPECT_EQ(c.find("/c"), nullptr);
  EXPECT_NE(c.find("/b"), nullptr);
  EXPECT_EQ(c.objects(), 1U);
  wait_removed(c);
  EXPECT_EQ(files(), 3U);  // /b's body and meta, and the journal
  // Stored again after the purge: kept (the removal never touches it).
  put(c, "/a", "red all");
  r.tags = {"kb"};  // Cache-Tag
  EXPECT_EQ(c.purge(r, 1), 1U);
  wait_removed(c);
  EXPECT_NE(c.find("/a"), nullptr);
  EXPECT_EQ(c.objects(), 1U);
  // Soft: still there, marked until stored again.
  r.soft = true;
  r.tags = {"all"};
  EXPECT_EQ(c.purge(r, 2), 1U);
  EXPECT_TRUE(c.soft_purged(*c.peek("/a")));
  put(c, "/a", "red all");
  EXPECT_FALSE(c.soft_purged(*c.peek("/a")));
}

TEST_F(DiskCachePurgeTest, RestartBeforeTheFilesAreGoneKeepsThePurge) {
  fs::path saved = dir_ + "/saved";
  fs::create_directory(saved);
  {
    DiskCache c(options());
    put(c, "/x/1", "t");
    c.settle();
    // The object's files as they are now: put back below, as if the
    // process died before its remover got to them.
    for (const auto& e : fs::directory_iterator(dir_ + "/cache")) {
      if (e.is_regular_file()) fs::copy_file(e.path(), saved / e.path().filename());
    }
    purge::Request r;
    r.scope = purge::Scope::Prefix;
    r.target = "/x/";
    EXPECT_EQ(c.purge(r, 0), 1U);
    wait_removed(c);
    put(c, "/y", "t", 999'999'999'999);  // stored after the purge: kept
  }
  for (const auto& e : fs::directory_iterator(saved)) {
    fs::copy_file(e.path(), dir_ + "/cache/" + e.path().filename().string(),
                  fs::copy_options::overwrite_existing);
  }
  DiskCache again(options());
  EXPECT_EQ(again.find("/x/1"), nullptr);
  EXPECT_NE(again.find("/y"), nullptr);
  EXPECT_EQ(again.corrupt_dropped(), 0U);
  EXPECT_EQ(files(), 3U);  // /y, and the journal
}

}  // namespace
}  // namespace cdn::replica

// ------------------------------------------------------------ the cache's thread
// Commits (renames, meta) run on the cache's thread; the loop only updates
// the index. These hold that thread before each job (Options::before_job)
// to make the window between commit() and the files on disk wide.

namespace cdn::replica {
namespace {

// Closed: the cache's thread waits at it (10 s at most, so that a broken
// test ends) before each commit or meta job.
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool open = true;
  int held = 0;
  void close() {
    std::lock_guard lock(mu);
    open = false;
  }
  void release() {
    std::lock_guard lock(mu);
    open = true;
    cv.notify_all();
  }
  void pass() {
    std::unique_lock lock(mu);
    ++held;
    cv.notify_all();
    cv.wait_for(lock, std::chrono::seconds(10), [this] { return open; });
    --held;
  }
  bool wait_held(int n) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(10), [&] { return held >= n; });
  }
};

class DiskCacheJobTest : public DiskCacheTest {
 protected:
  DiskCache::Options gated() {
    auto o = options(1 << 20, 0);
    o.memory_object_limit = 0;  // every body answered from its file
    o.before_job = [g = gate_] { g->pass(); };
    return o;
  }
  // Regular files in the cache directory (not tmp/) by name.
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    for (const auto& f : fs::directory_iterator(dir_ + "/cache")) {
      if (f.is_regular_file()) out.push_back(f.path().filename().string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  size_t ending(const std::string& suffix) const {
    size_t n = 0;
    for (const auto& f : files()) n += f.ends_with(suffix);
    return n;
  }
  static std::string pattern(size_t n, char seed) {
    std::string s(n, '\0');
    for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + i % 23);
    return s;
  }
  std::shared_ptr<Gate> gate_ = std::make_shared<Gate>();
};

TEST_F(DiskCacheJobTest, HitsWhileACommitIsPendingGetItsBytes) {
  const std::string body = pattern(5000, 'a');
  {
    DiskCache c(gated());
    gate_->close();
    const auto* e = put(c, "/w", body);
    ASSERT_NE(e, nullptr);
    ASSERT_TRUE(gate_->wait_held(1));
    // Held before the rename: no file has its name yet, the hit is served.
    EXPECT_EQ(c.jobs_pending(), 1U);
    EXPECT_EQ(ending(".body"), 0U);
    EXPECT_FALSE(e->object->in_memory);
    EXPECT_EQ(read_fd(c.open(*c.find("/w"))), body);
    const int early = c.open(*c.find("/w"));
    gate_->release();
    // Renamed, meta written, not yet heard of on the loop: served still.
    for (int i = 0; i < 5000 && ending(".meta") == 0; ++i) ::usleep(1000);
    ASSERT_EQ(files().size(), 2U);
    EXPECT_EQ(c.jobs_pending(), 1U);
    EXPECT_EQ(read_fd(c.open(*c.find("/w"))), body);
    EXPECT_TRUE(c.settle().empty());
    EXPECT_EQ(c.jobs_pending(), 0U);
    EXPECT_EQ(c.find("/w")->body_fd, nullptr);  // by its name now
    EXPECT_EQ(read_fd(c.open(*c.find("/w"))), body);
    EXPECT_EQ(read_fd(early), body);
  }
  DiskCache again(options(1 << 20, 0));
  EXPECT_EQ(again.corrupt_dropped(), 0U);
  ASSERT_NE(again.find("/w"), nullptr);
  EXPECT_EQ(read_fd(again.open(*again.find("/w"))), body);
}

// A slow disk holds the fsyncs, not the commits: renames and metas go on
// while a batch of fsyncs waits, so the files of evicted entries go too
// (they once waited behind every 64 commits' fsyncs, over cache_size).
TEST_F(DiskCacheJobTest, CommitsGoOnWhileFsyncsWait) {
  auto synced = std::make_shared<Gate>();
  auto o = options(1 << 20, 0);
  o.before_sync = [synced] { synced->pass(); };
  DiskCache c(o);
  synced->close();
  constexpr int kEntries = 150;
  for (int i = 0; i < kEntries; ++i) ASSERT_NE(put(c, "/s" + std::to_string(i), "x"), nullptr);
  ASSERT_TRUE(synced->wait_held(1));
  for (int i = 0; i < 5000 && ending(".meta") < kEntries; ++i) ::usleep(1000);
  EXPECT_EQ(ending(".meta"), size_t{kEntries});
  EXPECT_EQ(ending(".body"), size_t{kEntries});
  EXPECT_TRUE(c.settle().empty());
  EXPECT_EQ(c.jobs_pending(), 0U);
  synced->release();
}

// Purged, invalidated or evicted while its commit waits: the removal comes
// after the renames, nothing comes back (now or at restart), and an answer
// that began still gets its whole body.
TEST_F(DiskCacheJobTest, RemovedWhileItsCommitIsPendingStaysRemoved) {
  const std::string body = pattern(5000, 'p');
  {
    auto o = gated();
    o.max_entries = 2;
    DiskCache c(o);
    gate_->close();
    ASSERT_NE(put(c, "/p", body), nullptr);
    ASSERT_TRUE(gate_->wait_held(1));
    const int reading = c.open(*c.find("/p"));
    purge::Request r;
    r.scope = purge::Scope::Url;
    r.target = "/p";
    EXPECT_EQ(c.purge(r, 0), 1U);
    EXPECT_EQ(c.find("/p"), nullptr);
    ASSERT_NE(put(c, "/i", body), nullptr);
    c.erase_all("/i");  // an unsafe method's invalidation
    ASSERT_NE(put(c, "/e1", body), nullptr);
    ASSERT_NE(put(c, "/e2", body), nullptr);
    ASSERT_NE(put(c, "/e3", body), nullptr);  // evicts /e1 (max_entries)
    EXPECT_EQ(c.peek("/e1"), nullptr);
    EXPECT_EQ(c.objects(), 2U);
    gate_->release();
    EXPECT_TRUE(c.settle().empty());
    for (int i = 0; i < 5000 && c.purged_files_pending() > 0; ++i) ::usleep(1000);
    EXPECT_EQ(read_fd(reading), body);
    EXPECT_EQ(c.objects(), 2U);
    EXPECT_EQ(c.write_errors(), 0U);
    // /e2 and /e3, and the purge journal.
    EXPECT_EQ(ending(".body"), 2U);
    EXPECT_EQ(ending(".meta"), 2U);
    EXPECT_EQ(files().size(), 5U);
  }
  DiskCache again(options());
  EXPECT_EQ(again.find("/p"), nullptr);
  EXPECT_EQ(again.find("/i"), nullptr);
  EXPECT_EQ(again.find("/e1"), nullptr);
  EXPECT_EQ(again.objects(), 2U);
  EXPECT_EQ(again.corrupt_dropped(), 0U);
}

// The same key stored twice (and refreshed) before the thread gets to it:
// the last one wins on disk and in the index, its meta with its body.
TEST_F(DiskCacheJobTest, CommitsOfOneKeyInARowEndWithTheLast) {
  const std::string first = pattern(5000, 'f'), second = pattern(7000, 's');
  {
    DiskCache c(gated());
    gate_->close();
    ASSERT_NE(put(c, "/k", first), nullptr);
    ASSERT_TRUE(gate_->wait_held(1));
    ASSERT_NE(put(c, "/k", second), nullptr);
    EXPECT_EQ(read_fd(c.open(*c.find("/k"))), second);
    cache::Stored s;
    s.headers = {{"X-Refreshed", "yes"}};
    s.response_time = 2000;
    ASSERT_NE(c.refresh("/k", s), nullptr);
    EXPECT_EQ(c.jobs_pending(), 3U);
    gate_->release();
    EXPECT_TRUE(c.settle().empty());
    EXPECT_EQ(c.objects(), 1U);
    EXPECT_EQ(read_fd(c.open(*c.find("/k"))), second);
    EXPECT_EQ(files().size(), 2U);
  }
  DiskCache again(options(1 << 20, 0));
  EXPECT_EQ(again.corrupt_dropped(), 0U);
  const auto* e = again.find("/k");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(read_fd(again.open(*e)), second);
  ASSERT_EQ(e->meta.stored.headers.size(), 1U);
  EXPECT_EQ(e->meta.stored.headers[0].value, "yes");
}

// A rename or meta write that fails on the thread: the entry goes when the
// loop hears of it, its blocks with it, counted and reported once; an
// answer that began keeps its bytes.
TEST_F(DiskCacheJobTest, AFailedCommitDropsTheEntry) {
  const std::string body = pattern(5000, 'x');
  DiskCache c(gated());
  gate_->close();
  ASSERT_NE(put(c, "/f", body), nullptr);
  ASSERT_TRUE(gate_->wait_held(1));
  const int reading = c.open(*c.find("/f"));
  for (const auto& t : fs::directory_iterator(dir_ + "/cache/tmp")) fs::remove(t.path());
  gate_->release();
  auto failures = c.settle();
  ASSERT_EQ(failures.size(), 1U);
  EXPECT_NE(failures[0].find("/f not stored: body rename"), std::string::npos) << failures[0];
  EXPECT_EQ(c.find("/f"), nullptr);
  EXPECT_EQ(c.objects(), 0U);
  EXPECT_EQ(c.write_errors(), 1U);
  EXPECT_EQ(c.disk_bytes(), 0U);
  EXPECT_EQ(read_fd(reading), body);
  EXPECT_TRUE(files().empty());

  // The meta: its name taken by a directory.
  ASSERT_NE(put(c, "/m", body), nullptr);
  EXPECT_TRUE(c.settle().empty());
  const std::string stem = files().front().substr(0, files().front().find('.'));
  c.erase("/m", "");
  fs::create_directory(dir_ + "/cache/" + stem + ".meta");
  ASSERT_NE(put(c, "/m", body), nullptr);
  failures = c.settle();
  ASSERT_EQ(failures.size(), 1U);
  EXPECT_NE(failures[0].find("/m not stored: meta write"), std::string::npos) << failures[0];
  EXPECT_EQ(c.objects(), 0U);
  EXPECT_EQ(c.write_errors(), 2U);
  EXPECT_EQ(c.disk_bytes(), 0U);
  EXPECT_TRUE(files().empty());  // the body went too
  fs::remove(dir_ + "/cache/" + stem + ".meta");
}

// Closing the cache with commits queued: they are done first, whole.
TEST_F(DiskCacheJobTest, ShutdownCompletesTheCommitsQueued) {
  std::thread opener;
  {
    DiskCache c(gated());
    gate_->close();
    for (const char* k : {"/1", "/2", "/3"}) ASSERT_NE(put(c, k, pattern(5000, k[1])), nullptr);
    ASSERT_TRUE(gate_->wait_held(1));
    EXPECT_EQ(c.jobs_pending(), 3U);
    // Opened while the destructor waits (or just before: the same end).
    opener = std::thread([g = gate_] {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      g->release();
    });
  }
  opener.join();
  DiskCache again(options(1 << 20, 0));
  EXPECT_EQ(again.objects(), 3U);
  EXPECT_EQ(again.corrupt_dropped(), 0U);
  for (const char* k : {"/1", "/2", "/3"}) {
    ASSERT_NE(again.find(k), nullptr);
    EXPECT_EQ(read_fd(again.open(*again.find(k))), pattern(5000, k[1]));
  }
  EXPECT_TRUE(fs::is_empty(dir_ + "/cache/tmp"));
}

}  // namespace
}  // namespace cdn::replica
