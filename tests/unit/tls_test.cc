// SPDX-License-Identifier: MIT
// A client engine and a server engine talking over memory, with a CA and
// certificates made by the openssl command line in a temporary directory.
#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/tls/context.hpp"
#include "common/tls/engine.hpp"
#include "tests/unit/tls_pki.hpp"

using cdn::tls::ClientConfig;
using cdn::tls::ClientContext;
using cdn::tls::Engine;
using cdn::tls::ServerConfig;
using cdn::tls::ServerContext;
using cdn::tls::TicketKeys;

namespace {

using cdn::testing::pki;

ServerConfig config_of(std::initializer_list<std::string> names) {
  ServerConfig c;
  for (const auto& n : names)
    c.certificates.push_back({pki().path(n + ".pem"), pki().path(n + ".key")});
  return c;
}

std::shared_ptr<const ServerContext> server_ctx(const ServerConfig& c,
                                                std::shared_ptr<TicketKeys> keys = nullptr) {
  auto built = ServerContext::build(c, std::move(keys));
  EXPECT_EQ(built.error, "");
  return built.context;
}

std::shared_ptr<const ClientContext> client_ctx(bool verify = true) {
  auto built = ClientContext::build(ClientConfig{pki().path("ca.pem"), verify});
  EXPECT_EQ(built.error, "");
  return built.context;
}

// Moves every byte each side has for the other until neither has any.
void pump(Engine& client, Engine& server) {
  for (int i = 0; i < 100; ++i) {
    std::string to_server;
    std::string to_client;
    client.take_output(to_server);
    if (!to_server.empty()) server.receive(to_server);
    server.take_output(to_client);
    if (!to_client.empty()) client.receive(to_client);
    if (to_server.empty() && to_client.empty()) return;
  }
  ADD_FAILURE() << "the engines never settled";
}

std::string read_all(Engine& e) {
  std::string out;
  char buf[4096];
  while (const size_t n = e.read(buf, sizeof buf)) out.append(buf, n);
  return out;
}

std::string subject_cn(Engine& client) {
  X509* peer = SSL_get0_peer_certificate(client.ssl());
  if (peer == nullptr) return "";
  char cn[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof cn);
  return cn;
}

struct Pair {
  Engine client;
  Engine server;
};

Pair connect(std::shared_ptr<const ServerContext> s, std::string_view host,
             std::shared_ptr<const ClientContext> c = nullptr, SSL_SESSION* session = nullptr) {
  Pair p{Engine::client(c ? c : client_ctx(), host), Engine::server(std::move(s))};
  if (session != nullptr) {
    // A client offers the version of the session it resumes.
    SSL_set_max_proto_version(p.client.ssl(), SSL_SESSION_get_protocol_version(session));
    SSL_set_session(p.client.ssl(), session);
  }
  p.client.start();
  pump(p.client, p.server);
  return p;
}

}  // namespace

TEST(Tls, HandshakeAlpnAndDataBothWays) {
  auto p = connect(server_ctx(config_of({"a"})), "a.test");
  ASSERT_EQ(p.client.state(), Engine::State::Open) << p.client.error();
  ASSERT_EQ(p.server.state(), Engine::State::Open) << p.server.error();
  EXPECT_EQ(p.server.version(), "TLSv1.3");
  EXPECT_EQ(p.server.protocol(), cdn::tls::Protocol::Http11);
  EXPECT_EQ(p.client.protocol(), cdn::tls::Protocol::Http11);
  EXPECT_EQ(p.server.server_name(), "a.test");
  const std::string big(100'000, 'x');
  size_t sent = 0;
  std::string got;
  while (sent < big.size()) {
    sent += p.client.write(std::string_view(big).substr(sent));
    pump(p.client, p.server);
    got += read_all(p.server);
  }
  EXPECT_EQ(got, big);
  EXPECT_EQ(p.server.write("HTTP/1.1 200 OK\r\n\r\n"), 19u);
  pump(p.client, p.server);
  EXPECT_EQ(read_all(p.client), "HTTP/1.1 200 OK\r\n\r\n");
  p.client.close();
  pump(p.client, p.server);
  read_all(p.server);
  EXPECT_EQ(p.server.state(), Engine::State::Closed);
}

// The Wire lives inside the engine: a moved engine's BIO reads and writes
// the new one, mid-handshake (bytes waiting in it) and once open.
TEST(Tls, AMovedEngineKeepsItsWire) {
  Engine client = Engine::client(client_ctx(), "a.test");
  Engine server = Engine::server(server_ctx(config_of({"a"})));
  client.start();
  std::string hello;
  client.take_output(hello);
  server.receive(hello.substr(0, 3));  // part of the first record: no SSL yet
  Engine server2(std::move(server));
  server2.receive(hello.substr(3));
  Engine client2 = Engine::client(client_ctx(), "b.test");
  client2 = std::move(client);
  pump(client2, server2);
  ASSERT_EQ(client2.state(), Engine::State::Open) << client2.error();
  ASSERT_EQ(server2.state(), Engine::State::Open) << server2.error();
  Engine server3(std::move(server2));
  EXPECT_EQ(client2.write("ping"), 4u);
  pump(client2, server3);
  EXPECT_EQ(read_all(server3), "ping");
  EXPECT_EQ(server3.write("pong"), 4u);
  pump(client2, server3);
  EXPECT_EQ(read_all(client2), "pong");
}

TEST(Tls, SniChoosesTheCertificateAndFallsBackToTheFirst) {
  auto ctx = server_ctx(config_of({"a", "b"}));
  auto b = connect(ctx, "b.test");
  ASSERT_EQ(b.client.state(), Engine::State::Open) << b.client.error();
  EXPECT_EQ(subject_cn(b.client), "b");
  auto wild = connect(ctx, "x.wild.test");
  ASSERT_EQ(wild.client.state(), Engine::State::Open) << wild.client.error();
  EXPECT_EQ(subject_cn(wild.client), "a");
  // Unknown name: the first certificate, which the client then refuses.
  auto unknown = connect(ctx, "nobody.test");
  EXPECT_EQ(unknown.client.state(), Engine::State::Failed);
  EXPECT_NE(unknown.client.error().find("hostname mismatch"), std::string::npos)
      << unknown.client.error();
}

TEST(Tls, EcdsaAndRsaForOneHostShareAContext) {
  auto ctx = server_ctx(config_of({"a", "a-rsa"}));
  EXPECT_EQ(ctx->describe(), "a [*.wild.test, a.test] (ECDSA+RSA)");
  auto ecdsa = connect(ctx, "a.test");
  ASSERT_EQ(ecdsa.client.state(), Engine::State::Open) << ecdsa.client.error();
  EXPECT_EQ(subject_cn(ecdsa.client), "a");
  // A client that signs only with RSA gets the RSA certificate.
  Pair rsa{Engine::client(client_ctx(), "a.test"), Engine::server(ctx)};
  ASSERT_EQ(SSL_set1_sigalgs_list(rsa.client.ssl(), "rsa_pss_rsae_sha256:RSA+SHA256"), 1);
  rsa.client.start();
  pump(rsa.client, rsa.server);
  ASSERT_EQ(rsa.client.state(), Engine::State::Open) << rsa.client.error();
  EXPECT_EQ(subject_cn(rsa.client), "a-rsa");
  // The same hosts and key type twice: the second could never be chosen.
  auto twice = ServerContext::build(config_of({"a", "a"}), nullptr);
  EXPECT_EQ(twice.context, nullptr);
  EXPECT_NE(twice.error.find("same key type"), std::string::npos) << twice.error;
}

TEST(Tls, Tls12WithIntermediateCiphersAndNothingOlder) {
  auto ctx = server_ctx(config_of({"b"}));
  Pair p{Engine::client(client_ctx(), "b.test"), Engine::server(ctx)};
  SSL_set_max_proto_version(p.client.ssl(), TLS1_2_VERSION);
  p.client.start();
  pump(p.client, p.server);
  ASSERT_EQ(p.server.state(), Engine::State::Open) << p.server.error();
  EXPECT_EQ(p.server.version(), "TLSv1.2");
  EXPECT_EQ(p.server.cipher().substr(0, 6), "ECDHE-");
  // A TLS 1.2 client offering only CBC suites finds nothing in common.
  Pair cbc{Engine::client(client_ctx(), "b.test"), Engine::server(ctx)};
  SSL_set_max_proto_version(cbc.client.ssl(), TLS1_2_VERSION);
  SSL_set_cipher_list(cbc.client.ssl(), "ECDHE-RSA-AES128-SHA:AES128-SHA");
  cbc.client.start();
  pump(cbc.client, cbc.server);
  EXPECT_EQ(cbc.server.state(), Engine::State::Failed);
  EXPECT_NE(cbc.server.error().find("no shared cipher"), std::string::npos) << cbc.server.error();
  // TLS 1.1 is refused.
  Pair old{Engine::client(client_ctx(), "b.test"), Engine::server(ctx)};
  SSL_set_min_proto_version(old.client.ssl(), TLS1_VERSION);
  SSL_set_max_proto_version(old.client.ssl(), TLS1_1_VERSION);
  SSL_set_security_level(old.client.ssl(), 0);
  old.client.start();
  pump(old.client, old.server);
  EXPECT_EQ(old.server.state(), Engine::State::Failed);
}

TEST(Tls, AlpnWithoutHttp11IsRefusedAndH2OnlyWhenServed) {
  Pair p{Engine::client(client_ctx(), "a.test"), Engine::server(server_ctx(config_of({"a"})))};
  static const unsigned char kH2Only[] = "\x02h2";
  SSL_set_alpn_protos(p.client.ssl(), kH2Only, 3);
  p.client.start();
  pump(p.client, p.server);
  EXPECT_EQ(p.server.state(), Engine::State::Failed);

  ServerConfig with_h2 = config_of({"a"});
  with_h2.h2 = true;
  Pair h2{Engine::client(client_ctx(), "a.test"), Engine::server(server_ctx(with_h2))};
  static const unsigned char kBoth[] = "\x08http/1.1\x02h2";
  SSL_set_alpn_protos(h2.client.ssl(), kBoth, sizeof kBoth - 1);
  h2.client.start();
  pump(h2.client, h2.server);
  EXPECT_EQ(h2.server.protocol(), cdn::tls::Protocol::H2);
}

namespace {

// A finished connection's session, with the ticket TLS 1.3 sends after the handshake.
SSL_SESSION* session_of(Pair& p) {
  p.server.write("x");
  pump(p.client, p.server);
  read_all(p.client);
  return SSL_get1_session(p.client.ssl());
}

}  // namespace

TEST(Tls, TicketsResumeAcrossContextsSharingTheKeys) {
  auto keys = std::make_shared<TicketKeys>();
  auto first = server_ctx(config_of({"a", "b"}), keys);
  auto client = client_ctx();
  for (const bool tls12 : {false, true}) {
    SCOPED_TRACE(tls12 ? "TLS 1.2" : "TLS 1.3");
    Pair p{Engine::client(client, "b.test"), Engine::server(first)};
    if (tls12) SSL_set_max_proto_version(p.client.ssl(), TLS1_2_VERSION);
    p.client.start();
    pump(p.client, p.server);
    ASSERT_EQ(p.client.state(), Engine::State::Open) << p.client.error();
    EXPECT_FALSE(p.server.resumed());
    SSL_SESSION* session = session_of(p);
    ASSERT_NE(session, nullptr);
    EXPECT_TRUE(SSL_SESSION_has_ticket(session));
    EXPECT_TRUE(SSL_SESSION_is_resumable(session));
    // A context built again (a reload, or another worker's view) with the same ring.
    auto again = server_ctx(config_of({"a", "b"}), keys);
    auto r = connect(again, "b.test", client, session);
    ASSERT_EQ(r.client.state(), Engine::State::Open) << r.client.error();
    EXPECT_TRUE(r.server.resumed());
    EXPECT_EQ(r.server.server_name(), "b.test");
    // Another ring cannot open the ticket: a full handshake.
    auto stranger = server_ctx(config_of({"a", "b"}), std::make_shared<TicketKeys>());
    auto f = connect(stranger, "b.test", client, session);
    ASSERT_EQ(f.client.state(), Engine::State::Open) << f.client.error();
    EXPECT_FALSE(f.server.resumed());
    SSL_SESSION_free(session);
  }
}

TEST(Tls, AResumedTls13ConnectionHandsOutATicketForTheNext) {
  // TLS 1.3 clients use a ticket once: a resumption that sent no new one
  // would make the client's next connection a full handshake.
  auto ctx = server_ctx(config_of({"a"}));
  auto client = client_ctx();
  auto first = connect(ctx, "a.test", client);
  ASSERT_EQ(first.client.state(), Engine::State::Open) << first.client.error();
  SSL_SESSION* session = session_of(first);
  ASSERT_NE(session, nullptr);
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE(i);
    auto r = connect(ctx, "a.test", client, session);
    ASSERT_EQ(r.client.state(), Engine::State::Open) << r.client.error();
    EXPECT_TRUE(r.server.resumed());
    SSL_SESSION* next = session_of(r);
    ASSERT_NE(next, nullptr);
    EXPECT_NE(next, session) << "no new ticket after a resumption";
    EXPECT_TRUE(SSL_SESSION_is_resumable(next));
    // A client that ends with close_notify, as a clean client does: OpenSSL marks
    // the session of an SSL freed without one not resumable.
    r.client.close();
    SSL_SESSION_free(session);
    session = next;
  }
  SSL_SESSION_free(session);
}

TEST(Tls, TicketKeysRotateAndExpire) {
  auto now = std::chrono::steady_clock::time_point{} + std::chrono::hours(1000);
  auto keys = std::make_shared<TicketKeys>(std::chrono::seconds(3600), 3, [&] { return now; });
  EXPECT_EQ(keys->lifetime(), std::chrono::seconds(7200));
  auto ctx = server_ctx(config_of({"a"}), keys);
  auto client = client_ctx();
  auto p = connect(ctx, "a.test", client);
  SSL_SESSION* session = session_of(p);
  ASSERT_NE(session, nullptr);
  // Two rotations later the key is still kept: resumed.
  now += std::chrono::hours(2);
  auto r = connect(ctx, "a.test", client, session);
  EXPECT_TRUE(r.server.resumed());
  // A third, and the key is gone.
  now += std::chrono::hours(1);
  auto f = connect(ctx, "a.test", client, session);
  ASSERT_EQ(f.client.state(), Engine::State::Open) << f.client.error();
  EXPECT_FALSE(f.server.resumed());
  SSL_SESSION_free(session);
  // An idle process that wakes after many periods keeps none of its old keys.
  TicketKeys::Key k = keys->current();
  now += std::chrono::hours(10);
  TicketKeys::Key out;
  bool newest = false;
  EXPECT_FALSE(keys->find(k.name.data(), out, newest));
}

TEST(Tls, OcspStapleIsSentForTheCertificateItAnswers) {
  ServerConfig c = config_of({"a", "b"});
  c.ocsp.push_back(pki().path("a.ocsp"));
  auto ctx = server_ctx(c);
  ASSERT_NE(ctx, nullptr);
  for (const char* host : {"a.test", "b.test"}) {
    Pair p{Engine::client(client_ctx(), host), Engine::server(ctx)};
    SSL_set_tlsext_status_type(p.client.ssl(), TLSEXT_STATUSTYPE_ocsp);
    p.client.start();
    pump(p.client, p.server);
    ASSERT_EQ(p.client.state(), Engine::State::Open) << p.client.error();
    const unsigned char* resp = nullptr;
    const long n = SSL_get_tlsext_status_ocsp_resp(p.client.ssl(), &resp);
    if (std::string_view(host) == "a.test") {
      EXPECT_GT(n, 0);
    } else {
      EXPECT_EQ(resp, nullptr);
    }
  }
  // A response for a certificate that is not served is refused.
  ServerConfig wrong = config_of({"b"});
  wrong.ocsp.push_back(pki().path("a.ocsp"));
  auto built = ServerContext::build(wrong, nullptr);
  EXPECT_EQ(built.context, nullptr);
  EXPECT_NE(built.error.find("a.ocsp: answers for none"), std::string::npos) << built.error;
}

TEST(Tls, GarbageAndTruncatedClientHellos) {
  auto ctx = server_ctx(config_of({"a"}));
  {
    Engine s = Engine::server(ctx);
    EXPECT_EQ(s.receive("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Engine::State::Failed);
    EXPECT_FALSE(s.error().empty());
    // Nothing more is done with it.
    EXPECT_EQ(s.receive("more"), Engine::State::Failed);
  }
  {
    // A real ClientHello, cut short: the server waits for the rest, and a
    // byte at a time gets it there.
    Engine c = Engine::client(client_ctx(), "a.test");
    c.start();
    std::string hello;
    c.take_output(hello);
    ASSERT_GT(hello.size(), 100u);
    Engine s = Engine::server(ctx);
    EXPECT_EQ(s.receive(std::string_view(hello).substr(0, 50)), Engine::State::Handshaking);
    EXPECT_EQ(s.pending_output(), 0u);
    EXPECT_EQ(s.ssl(), nullptr);  // no SSL (nor its buffers) before a whole record
    for (size_t i = 50; i < hello.size(); ++i) {
      EXPECT_EQ(s.receive(std::string_view(hello).substr(i, 1)), Engine::State::Handshaking);
    }
    EXPECT_GT(s.pending_output(), 0u);  // the ServerHello
    pump(c, s);
    EXPECT_EQ(c.state(), Engine::State::Open) << c.error();
  }
  {
    // A record header announcing a handshake record of 2^14 + 2048 bytes: over TLS's limit.
    Engine s = Engine::server(ctx);
    EXPECT_EQ(s.receive(std::string("\x16\x03\x01\x48\x01", 5) + std::string(100, '\0')),
              Engine::State::Failed);
  }
  {
    // A well-framed record whose ClientHello body is junk.
    std::string rec("\x16\x03\x01\x00\x30\x01\x00\x00\x2c", 9);
    rec += std::string(0x2c, '\xff');
    Engine s = Engine::server(ctx);
    EXPECT_EQ(s.receive(rec), Engine::State::Failed);
    std::string alert;
    s.take_output(alert);
    ASSERT_GE(alert.size(), 7u);
    EXPECT_EQ(alert[0], '\x15');  // the server says why, as an alert record
  }
}

TEST(Tls, ClientRefusesAnUntrustedCertificateUnlessInsecure) {
  auto ctx = server_ctx(config_of({"a"}));
  auto system_store = ClientContext::build(ClientConfig{});
  ASSERT_EQ(system_store.error, "");
  auto refused = connect(ctx, "a.test", system_store.context);
  EXPECT_EQ(refused.client.state(), Engine::State::Failed);
  EXPECT_NE(refused.client.error().find("certificate"), std::string::npos)
      << refused.client.error();
  auto insecure = connect(ctx, "wrong.name", client_ctx(false));
  EXPECT_EQ(insecure.client.state(), Engine::State::Open) << insecure.client.error();
  auto bad_ca = ClientContext::build(ClientConfig{pki().path("missing.pem"), true});
  EXPECT_EQ(bad_ca.context, nullptr);
  EXPECT_NE(bad_ca.error.find("missing.pem: cannot be read"), std::string::npos) << bad_ca.error;
}

TEST(Tls, BrokenFilesAreRefusedWithTheFileAndTheReason) {
  const auto error_of = [](const std::string& cert, const std::string& key) {
    ServerConfig c;
    c.certificates.push_back({cert, key});
    auto built = ServerContext::build(c, nullptr);
    EXPECT_EQ(built.context, nullptr);
    return built.error;
  };
  const std::string missing = pki().path("nope.pem");
  EXPECT_EQ(error_of(missing, pki().path("a.key")),
            missing + ": cannot be read (No such file or directory)");
  pki().write("junk.pem", "hello\n");
  EXPECT_EQ(error_of(pki().path("junk.pem"), pki().path("a.key")),
            pki().path("junk.pem") + ": no PEM certificate in it");
  std::ifstream in(pki().path("a.pem"));
  std::string pem((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  pki().write("cut.pem", pem.substr(0, 200) + "\n-----END CERTIFICATE-----\n");
  EXPECT_NE(error_of(pki().path("cut.pem"), pki().path("a.key")).find("cut.pem: "),
            std::string::npos);
  EXPECT_EQ(error_of(pki().path("a.pem"), pki().path("b.key")),
            pki().path("b.key") + ": does not match the certificate " + pki().path("a.pem"));
  EXPECT_NE(error_of(pki().path("a.pem"), pki().path("junk.pem"))
                .find("junk.pem: no usable PEM private key"),
            std::string::npos);
  EXPECT_EQ(ServerContext::build(ServerConfig{}, nullptr).error,
            "no certificate ([tls] certificate and key)");
}

// kTLS wanted (a socket to write to) where the kernel will not take the
// keys (a Unix socket has no tls ULP, nor have the test machines): the
// handshake's output goes to the socket, none to take_output(); afterwards
// the kernel holds nothing, and with its own BIO back the engine writes
// as any other. TLS 1.2 and 1.3.
TEST(Tls, KtlsWantedWritesTheHandshakeToTheSocketThenFallsBack) {
  for (const int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    Engine client = Engine::client(client_ctx(), "a.test");
    Engine server = Engine::server(server_ctx(config_of({"a"})), fds[0]);
    SSL_set_max_proto_version(client.ssl(), version);
    client.start();
    for (int i = 0; i < 100 && server.state() == Engine::State::Handshaking; ++i) {
      std::string to_server;
      client.take_output(to_server);
      server.receive(to_server);
      std::string direct;
      EXPECT_EQ(server.take_output(direct), 0u);  // nothing through memory
      char buf[65536];
      const ssize_t n = ::recv(fds[1], buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) client.receive(std::string_view(buf, static_cast<size_t>(n)));
    }
    ASSERT_EQ(server.state(), Engine::State::Open) << server.error();
    EXPECT_FALSE(server.wants_writable());
    EXPECT_FALSE(server.kernel_sends());
    // The last of the handshake (TLS 1.3: the tickets) went to the socket.
    char buf[65536];
    const ssize_t n = ::recv(fds[1], buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) client.receive(std::string_view(buf, static_cast<size_t>(n)));
    server.stop_direct_writes();
    pump(client, server);
    ASSERT_EQ(client.state(), Engine::State::Open) << client.error();
    EXPECT_EQ(server.version(), version == TLS1_2_VERSION ? "TLSv1.2" : "TLSv1.3");
    EXPECT_EQ(server.write("after the fallback"), 18u);
    EXPECT_GT(server.pending_output(), 0u);
    pump(client, server);
    EXPECT_EQ(::recv(fds[1], buf, sizeof buf, MSG_DONTWAIT), -1);  // nothing more there
    EXPECT_EQ(read_all(client), "after the fallback");
    ::close(fds[0]);
    ::close(fds[1]);
  }
}
