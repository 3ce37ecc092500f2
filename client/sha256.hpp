// SPDX-License-Identifier: MIT
// SHA-256 of a download as it arrives.
//
// OpenSSL's one-shot digest functions rather than EVP: EVP's first use sets up
// the provider machinery, and that and its cleanup at exit cost about 2.5 ms
// of CPU per run, more than everything else in a 4 KiB download. The bulk of
// a large file runs through the same assembly either way (SHA-NI where the
// CPU has it).
#pragma once

#include <array>
#include <memory>
#include <string_view>

struct SHA256state_st;

namespace cdn::get {

class Sha256 {
 public:
  static constexpr size_t kSize = 32;
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void reset();
  void update(std::string_view bytes);
  // The digest of everything since reset(); call reset() before reusing.
  std::array<unsigned char, kSize> finish();

 private:
  std::unique_ptr<SHA256state_st> ctx_;
};

}  // namespace cdn::get
