// SPDX-License-Identifier: MIT
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "common/http/mime.hpp"

namespace cdn::http {
namespace {

std::string builtin(std::string_view name) { return MimeTypes::builtin().content_type(name); }

TEST(Mime, BuiltinKnownTypes) {
  EXPECT_EQ(MimeTypes::builtin().size(), 27u);
  EXPECT_EQ(builtin("index.html"), "text/html; charset=utf-8");
  EXPECT_EQ(builtin("/a/b/INDEX.HTM"), "text/html; charset=utf-8");
  EXPECT_EQ(builtin("style.css"), "text/css; charset=utf-8");
  EXPECT_EQ(builtin("app.js"), "text/javascript; charset=utf-8");
  EXPECT_EQ(builtin("mod.mjs"), "text/javascript; charset=utf-8");
  EXPECT_EQ(builtin("d.json"), "application/json; charset=utf-8");
  EXPECT_EQ(builtin("r.txt"), "text/plain; charset=utf-8");
  EXPECT_EQ(builtin("i.svg"), "image/svg+xml; charset=utf-8");
  EXPECT_EQ(builtin("i.png"), "image/png");
  EXPECT_EQ(builtin("i.JPG"), "image/jpeg");
  EXPECT_EQ(builtin("i.jpeg"), "image/jpeg");
  EXPECT_EQ(builtin("f.woff2"), "font/woff2");
  EXPECT_EQ(builtin("a.tar.gz"), "application/gzip");
  EXPECT_EQ(builtin("m.wasm"), "application/wasm");
  EXPECT_EQ(builtin("README.md"), "text/markdown; charset=utf-8");
  EXPECT_EQ(builtin("v.mp4"), "video/mp4");
}

TEST(Mime, UnknownIsOctetStream) {
  for (const char* name : {"file", "file.", "file.exe", "/dir.html/file", "", ".htmlx", "x.m3u8"}) {
    EXPECT_EQ(builtin(name), "application/octet-stream") << name;
  }
}

TEST(Mime, CharsetForTextTypesOnly) {
  EXPECT_EQ(with_charset("text/vtt"), "text/vtt; charset=utf-8");
  EXPECT_EQ(with_charset("application/manifest+json"), "application/manifest+json; charset=utf-8");
  EXPECT_EQ(with_charset("application/dash+xml"), "application/dash+xml; charset=utf-8");
  EXPECT_EQ(with_charset("application/xml"), "application/xml; charset=utf-8");
  EXPECT_EQ(with_charset("image/avif"), "image/avif");
  EXPECT_EQ(with_charset("application/vnd.apple.mpegurl"), "application/vnd.apple.mpegurl");
  EXPECT_EQ(with_charset("font/woff2"), "font/woff2");
}

TEST(Mime, ParsesMimeTypesFormat) {
  const MimeTypes t = MimeTypes::parse(
      "# comment line\n"
      "\n"
      "application/vnd.apple.mpegurl\t\t\tm3u8 M3U\n"
      "text/vtt   vtt # a trailing comment\r\n"
      "application/x-sh sh\n"
      "text/x-sh sh\n"    // named twice: the first stays
      "image/png\tpng\n"  // overrides the built-in for png? same type
      "image/x-custom png2\n"
      "application/json-only\n"  // a type with no extension: nothing
      "not-a-type ext1\n"        // no slash: skipped
      "text/bad\"type ext2\n"    // a character a header may not carry: skipped
      "text/html htm\n");
  EXPECT_EQ(t.content_type("live/index.m3u8"), "application/vnd.apple.mpegurl");
  EXPECT_EQ(t.content_type("LIVE.M3U"), "application/vnd.apple.mpegurl");
  EXPECT_EQ(t.content_type("sub.vtt"), "text/vtt; charset=utf-8");
  EXPECT_EQ(t.content_type("run.sh"), "application/x-sh");
  EXPECT_EQ(t.content_type("a.png2"), "image/x-custom");
  EXPECT_EQ(t.content_type("a.ext1"), "application/octet-stream");
  EXPECT_EQ(t.content_type("a.ext2"), "application/octet-stream");
  EXPECT_EQ(t.content_type("a.json-only"), "application/octet-stream");
  // Not in the text: the built-in table answers.
  EXPECT_EQ(t.content_type("app.wasm"), "application/wasm");
  EXPECT_EQ(t.content_type("index.html"), "text/html; charset=utf-8");
}

TEST(Mime, FileEntriesWinOverTheBuiltinTable) {
  const MimeTypes t = MimeTypes::parse("image/vnd.microsoft.icon ico\n");
  EXPECT_EQ(t.content_type("favicon.ico"), "image/vnd.microsoft.icon");
  EXPECT_EQ(builtin("favicon.ico"), "image/x-icon");
}

TEST(Mime, ExtensionsLongerThanTheBoundAreIgnored) {
  const std::string ext(33, 'e');
  const MimeTypes t = MimeTypes::parse("text/x-long " + ext + "\n");
  EXPECT_EQ(t.content_type("a." + ext), "application/octet-stream");
}

// The types issue 18 names, from the file Debian installs (package media-types).
TEST(Mime, DebianMimeTypesFile) {
  if (::access("/etc/mime.types", R_OK) != 0) GTEST_SKIP() << "no /etc/mime.types";
  std::string error;
  const auto t = load_mime_types("/etc/mime.types", &error);
  ASSERT_EQ(error, "");
  EXPECT_GT(t->size(), 1000u);
  EXPECT_EQ(t->content_type("live/index.m3u8"), "application/vnd.apple.mpegurl");
  EXPECT_EQ(t->content_type("dash/manifest.mpd"), "application/dash+xml; charset=utf-8");
  EXPECT_EQ(t->content_type("dash/seg-1.m4s"), "video/iso.segment");
  EXPECT_EQ(t->content_type("img/a.avif"), "image/avif");
  EXPECT_EQ(t->content_type("fonts/f.woff2"), "font/woff2");
  EXPECT_EQ(t->content_type("site.webmanifest"), "application/manifest+json; charset=utf-8");
  EXPECT_EQ(t->content_type("index.html"), "text/html; charset=utf-8");
  EXPECT_EQ(t->content_type("data.bin"), "application/octet-stream");
}

TEST(Mime, UnreadableFileFallsBackToTheBuiltinTable) {
  std::string error;
  const auto t = load_mime_types("/nonexistent/mime.types", &error);
  EXPECT_NE(error.find("cannot open /nonexistent/mime.types"), std::string::npos) << error;
  EXPECT_EQ(t->size(), MimeTypes::builtin().size());
  EXPECT_EQ(t->content_type("a.css"), "text/css; charset=utf-8");
}

TEST(Mime, InstalledTableAnswersMimeType) {
  char path[] = "/tmp/cdn-mime-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::close(fd);
  std::ofstream(path) << "video/iso.segment m4s\n";
  EXPECT_EQ(mime_type("a.m4s"), "application/octet-stream");
  std::string error;
  install_mime_types(load_mime_types(path, &error));
  EXPECT_EQ(error, "");
  EXPECT_EQ(mime_type("a.m4s"), "video/iso.segment");
  EXPECT_EQ(mime_type("a.html"), "text/html; charset=utf-8");
  // Lookups on other threads while a table is swapped in (the store runs on
  // the threadpool while a reload installs): each sees one whole table.
  std::thread reader([] {
    for (int i = 0; i < 10000; ++i) {
      const std::string t = mime_type("a.m4s");
      ASSERT_TRUE(t == "video/iso.segment" || t == "application/octet-stream") << t;
    }
  });
  for (int i = 0; i < 100; ++i) {
    install_mime_types(i % 2 ? nullptr : load_mime_types(path, &error));
  }
  reader.join();
  install_mime_types(nullptr);
  EXPECT_EQ(mime_type("a.m4s"), "application/octet-stream");
  std::remove(path);
}

}  // namespace
}  // namespace cdn::http
