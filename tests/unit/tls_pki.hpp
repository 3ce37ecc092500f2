// SPDX-License-Identifier: MIT
// A CA and certificates made by the openssl command line in a temporary
// directory, once per test program (tls_test, net_tls_test).
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace cdn::testing {

// One CA and leaf certificates signed by it, made once for every test.
class Pki {
 public:
  Pki() {
    char tmpl[] = "/tmp/cdn-tls-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 "
        "-subj /CN=test-ca -keyout ca.key -out ca.pem");
    std::ofstream(dir_ + "/index.txt").close();
    leaf("a", "ec -pkeyopt ec_paramgen_curve:P-256", "DNS:a.test,DNS:*.wild.test");
    leaf("b", "rsa:2048", "DNS:b.test");
    leaf("a-rsa", "rsa:2048", "DNS:a.test,DNS:*.wild.test");
    leaf("other", "ec -pkeyopt ec_paramgen_curve:P-256", "DNS:other.test");
    // An OCSP response saying "good" for a.pem, signed by the CA.
    run("openssl ocsp -issuer ca.pem -cert a.pem -reqout a.req -no_nonce");
    run("openssl ocsp -index index.txt -rsigner ca.pem -rkey ca.key -CA ca.pem -reqin a.req "
        "-respout a.ocsp -ndays 1");
  }
  ~Pki() { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(path(name)) << text;
  }

 private:
  void run(const std::string& cmd) {
    const std::string full = "cd " + dir_ + " && (" + cmd + ") >/dev/null 2>&1";
    if (std::system(full.c_str()) != 0) ADD_FAILURE() << "failed: " << cmd;
  }
  void leaf(const std::string& name, const std::string& key, const std::string& sans) {
    run("openssl req -newkey " + key + " -nodes -subj /CN=" + name + " -keyout " + name +
        ".key -out " + name + ".csr");
    // The OCSP index lists issued certificates by serial; an empty one
    // would answer "unknown", so add a line for each.
    run("printf 'subjectAltName=" + sans + "\\n' > " + name + ".ext && openssl x509 -req -in " +
        name + ".csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile " + name +
        ".ext -out " + name + ".leaf && cat " + name + ".leaf ca.pem > " + name + ".pem");
    run("printf 'V\\t301231235959Z\\t\\t%s\\tunknown\\t/CN=" + name + "\\n' $(openssl x509 -in " +
        name + ".leaf -noout -serial | cut -d= -f2) >> index.txt");
  }
  std::string dir_;
};

inline Pki& pki() {
  static Pki p;
  return p;
}

}  // namespace cdn::testing
