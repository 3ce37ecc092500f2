// SPDX-License-Identifier: MIT
// Content-Type by file extension: a table read from mime.types (Debian's
// /etc/mime.types, package media-types: ~1,200 types, ~1,500 extensions),
// with a built-in table of the web's common types as the fallback for an
// extension the file lacks or when there is no file. Parsing and lookup are
// pure; load_mime_types() reads the file; the installed table is what
// mime_type() answers from, shared by the replica's threads.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

namespace cdn::http {

class MimeTypes {
 public:
  // The built-in table (27 extensions): used alone when no file is given.
  static const MimeTypes& builtin();
  // mime.types text: "type/subtype ext ext ..." a line, '#' starts a comment.
  // An extension named twice keeps its first type (Debian's file lists a few
  // twice: sh, tcl, csh). Lines whose type is not a valid media type are
  // skipped; extensions are matched ASCII case ignored. Extensions the text
  // does not name come from `fallback`.
  static MimeTypes parse(std::string_view text, const MimeTypes& fallback = builtin());

  // The Content-Type value for a file name by its extension, with
  // "; charset=utf-8" for text types (see with_charset); "application/octet-stream"
  // when the extension is unknown or there is none.
  std::string content_type(std::string_view filename) const;
  size_t size() const { return by_ext_.size(); }

 private:
  std::unordered_map<std::string, std::string> by_ext_;  // lower-case extension -> Content-Type
};

// type plus "; charset=utf-8" when it is text a browser would otherwise have
// to guess the encoding of: text/*, JSON, XML, JavaScript and the +json/+xml
// structured types (SVG, web manifests, DASH playlists).
std::string with_charset(std::string_view type);

// Reads and parses `path` (at most 4 MiB). On failure returns the built-in
// table and sets *error to the reason ("cannot open /x: No such file...").
std::shared_ptr<const MimeTypes> load_mime_types(const std::string& path, std::string* error);

// The table mime_type() answers from, for the whole process (the content
// store, the edge cache and the disk cache's index all name types; a reload
// installs a new table while lookups may run on worker threads, so it is
// swapped atomically and never changed in place). Before any install: builtin().
void install_mime_types(std::shared_ptr<const MimeTypes> table);
std::string mime_type(std::string_view filename);

}  // namespace cdn::http
