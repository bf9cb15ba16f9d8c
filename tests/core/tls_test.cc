// tests/core/tls_test.cc: the TLS engine (core/tls.h) with both ends in memory: a client and
// a server tls_session exchange every byte through strings, whole or one byte at a time;
// data both ways; certificate and handshake failures give an error text; session resumption
// across contexts that share ticket keys; self-signed generation and reuse; the kTLS probe.
#include "core/tls.h"

#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <string>

namespace ringrelay::core {
namespace {

constexpr std::string_view host = "mx.tls-test.invalid";

class temp_dir {
public:
    temp_dir() {
        char name[] = "/tmp/rr-tls-test-XXXXXX";
        const char* made = ::mkdtemp(name);
        EXPECT_NE(made, nullptr);
        _path = made != nullptr ? made : "/tmp";
    }
    temp_dir(temp_dir&& other) noexcept : _path(std::move(other._path)) { other._path.clear(); }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    ~temp_dir() {
        std::error_code ec;
        if (!_path.empty()) std::filesystem::remove_all(_path, ec);
    }
    [[nodiscard]] const std::string& path() const { return _path; }

private:
    std::string _path;
};

// A self-signed certificate for `name` in a fresh directory, loaded.
struct test_cert {
    temp_dir dir;
    self_signed_files files;
    tls_credentials credentials;
};

std::unique_ptr<test_cert> make_cert(std::string_view name) {
    temp_dir dir;
    auto files = ensure_self_signed(dir.path() + "/tls", name);
    if (!files) {
        ADD_FAILURE() << files.error().text;
        return nullptr;
    }
    auto creds = tls_credentials::load_pem(files->cert_file, files->key_file);
    if (!creds) {
        ADD_FAILURE() << creds.error().text;
        return nullptr;
    }
    return std::unique_ptr<test_cert>(new test_cert{std::move(dir), std::move(*files), std::move(*creds)});
}

// Moves everything `from` has to send into `to`, `step` bytes per feed (0: all at once).
// Returns false if `to` failed.
bool pump(tls_session& from, tls_session& to, std::string& to_plain, std::size_t step) {
    std::string wire;
    from.take_output(wire);
    std::string_view rest = wire;
    while (!rest.empty()) {
        const std::size_t n = step == 0 ? rest.size() : std::min(step, rest.size());
        if (!to.feed_ciphertext(rest.substr(0, n), to_plain)) return false;
        rest.remove_prefix(n);
    }
    return true;
}

struct endpoints {
    tls_session client;
    tls_session server;
    std::string client_plain;  // what the client decrypted
    std::string server_plain;  // what the server decrypted
};

// Runs the handshake to the end (both established, nothing left to send) or a failure.
bool handshake(endpoints& e, std::size_t step) {
    for (int round = 0; round < 16; ++round) {
        if (!pump(e.client, e.server, e.server_plain, step)) return false;
        if (!pump(e.server, e.client, e.client_plain, step)) return false;
        if (e.client.is_established() && e.server.is_established() && !e.client.has_output() &&
            !e.server.has_output()) {
            return true;
        }
    }
    ADD_FAILURE() << "handshake did not finish in 16 rounds";
    return false;
}

std::unique_ptr<endpoints> connect(const tls_context& client_ctx, const tls_context& server_ctx,
                                   std::string_view server_name = host) {
    auto client = tls_session::create(client_ctx, server_name);
    auto server = tls_session::create(server_ctx);
    if (!client || !server) {
        ADD_FAILURE() << "create failed";
        return nullptr;
    }
    return std::unique_ptr<endpoints>(new endpoints{std::move(*client), std::move(*server), {}, {}});
}

class TlsSessionTest : public ::testing::Test {
protected:
    void SetUp() override {
        cert = make_cert(host);
        ASSERT_NE(cert, nullptr);
        auto s = tls_context::server(cert->credentials);
        ASSERT_TRUE(s.has_value()) << s.error().text;
        server_ctx = std::make_unique<tls_context>(std::move(*s));
        auto c = tls_context::client();
        ASSERT_TRUE(c.has_value()) << c.error().text;
        client_ctx = std::make_unique<tls_context>(std::move(*c));
    }
    std::unique_ptr<test_cert> cert;
    std::unique_ptr<tls_context> server_ctx;
    std::unique_ptr<tls_context> client_ctx;
};

TEST_F(TlsSessionTest, HandshakeCompletesInMemory) {
    auto e = connect(*client_ctx, *server_ctx);
    ASSERT_NE(e, nullptr);
    EXPECT_TRUE(e->client.has_output()) << "the ClientHello is ready at once";
    EXPECT_FALSE(e->server.has_output());
    ASSERT_TRUE(handshake(*e, 0)) << e->server.error().text << " / " << e->client.error().text;
    EXPECT_EQ(e->server.protocol_name(), "TLSv1.3");
    EXPECT_EQ(e->client.protocol_name(), "TLSv1.3");
    EXPECT_FALSE(e->server.cipher_name().empty());
    EXPECT_EQ(e->server.cipher_name(), e->client.cipher_name());
    EXPECT_GE(e->server.cipher_bits(), 128);
    EXPECT_EQ(e->server.cipher_bits(), e->server.cipher_algorithm_bits());
    EXPECT_EQ(e->client.peer_common_name(), host);
    EXPECT_TRUE(e->server_plain.empty());
    EXPECT_TRUE(e->client_plain.empty());
}

TEST_F(TlsSessionTest, HandshakeCompletesOneByteAtATime) {
    auto e = connect(*client_ctx, *server_ctx);
    ASSERT_NE(e, nullptr);
    ASSERT_TRUE(handshake(*e, 1)) << e->server.error().text << " / " << e->client.error().text;
    EXPECT_EQ(e->server.protocol_name(), "TLSv1.3");
}

TEST_F(TlsSessionTest, CarriesDataBothWaysInAnySplit) {
    for (const std::size_t step : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{1000}}) {
        auto e = connect(*client_ctx, *server_ctx);
        ASSERT_NE(e, nullptr);
        ASSERT_TRUE(handshake(*e, step));
        std::string big;
        for (int i = 0; big.size() < 40000; ++i) big += "line " + std::to_string(i) + "\r\n";
        std::string wire;
        ASSERT_TRUE(e->client.encrypt("EHLO client.example\r\n", wire));
        ASSERT_TRUE(e->client.encrypt(big, wire));
        EXPECT_EQ(wire.find("EHLO"), std::string::npos) << "plaintext on the wire";
        std::string_view rest = wire;
        while (!rest.empty()) {
            const std::size_t n = step == 0 ? rest.size() : std::min(step, rest.size());
            ASSERT_TRUE(e->server.feed_ciphertext(rest.substr(0, n), e->server_plain)) << e->server.error().text;
            rest.remove_prefix(n);
        }
        EXPECT_EQ(e->server_plain, "EHLO client.example\r\n" + big) << "step " << step;
        std::string reply;
        ASSERT_TRUE(e->server.encrypt("250 mx.example\r\n", reply));
        ASSERT_TRUE(e->client.feed_ciphertext(reply, e->client_plain));
        EXPECT_EQ(e->client_plain, "250 mx.example\r\n");
    }
}

TEST_F(TlsSessionTest, DataInTheSameReadAsTheClientFinishedIsDelivered) {
    auto e = connect(*client_ctx, *server_ctx);
    ASSERT_NE(e, nullptr);
    // ClientHello -> server; server flight -> client: the client is established (TLS 1.3)
    // and sends its Finished and its first command together, before the server answers.
    ASSERT_TRUE(pump(e->client, e->server, e->server_plain, 0));
    ASSERT_TRUE(pump(e->server, e->client, e->client_plain, 0));
    ASSERT_TRUE(e->client.is_established());
    ASSERT_FALSE(e->server.is_established());
    std::string wire;
    ASSERT_TRUE(e->client.encrypt("EHLO fast.example\r\n", wire));
    ASSERT_TRUE(e->server.feed_ciphertext(wire, e->server_plain)) << e->server.error().text;
    EXPECT_TRUE(e->server.is_established());
    EXPECT_EQ(e->server_plain, "EHLO fast.example\r\n");
}

TEST_F(TlsSessionTest, Tls12IsAccepted) {
    ASSERT_EQ(SSL_CTX_set_max_proto_version(client_ctx->native(), TLS1_2_VERSION), 1);
    auto e = connect(*client_ctx, *server_ctx);
    ASSERT_NE(e, nullptr);
    ASSERT_TRUE(handshake(*e, 0)) << e->server.error().text;
    EXPECT_EQ(e->server.protocol_name(), "TLSv1.2");
}

TEST_F(TlsSessionTest, Tls11IsRefused) {
    ASSERT_EQ(SSL_CTX_set_min_proto_version(client_ctx->native(), 0), 1);
    ASSERT_EQ(SSL_CTX_set_max_proto_version(client_ctx->native(), TLS1_1_VERSION), 1);
    // Security level 0 on both ends: only the server's TLS 1.2 floor can refuse TLS 1.1.
    SSL_CTX_set_security_level(client_ctx->native(), 0);
    SSL_CTX_set_security_level(server_ctx->native(), 0);
    auto e = connect(*client_ctx, *server_ctx);
    ASSERT_NE(e, nullptr);
    EXPECT_FALSE(pump(e->client, e->server, e->server_plain, 0));
    EXPECT_EQ(e->server.state(), tls_state::failed);
    EXPECT_EQ(e->server.error().code, tls_errc::handshake);
    EXPECT_NE(e->server.error().text.find("TLS handshake failed: "), std::string::npos) << e->server.error().text;
    EXPECT_TRUE(e->server.has_output()) << "an alert for the client";
    std::string wire;
    EXPECT_FALSE(e->server.encrypt("250 ok\r\n", wire)) << "no data after a failure";
}

TEST_F(TlsSessionTest, PlaintextInsteadOfClientHelloFailsTheHandshake) {
    auto server = tls_session::create(*server_ctx);
    ASSERT_TRUE(server);
    std::string plain;
    const auto r = server->feed_ciphertext("EHLO injected.example\r\n", plain);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, tls_errc::handshake);
    EXPECT_NE(r.error().text.find("TLS handshake failed: "), std::string::npos);
    EXPECT_GT(r.error().text.size(), std::string_view("TLS handshake failed: ").size());
    EXPECT_TRUE(plain.empty());
    EXPECT_EQ(server->state(), tls_state::failed);
    // Later input is refused the same way and still never yields plaintext.
    EXPECT_FALSE(server->feed_ciphertext("RSET\r\n", plain));
    EXPECT_TRUE(plain.empty());
}

TEST_F(TlsSessionTest, ClientThatVerifiesRefusesAnUnknownCertificate) {
    auto other = make_cert(host);  // same name, different key: not the trust anchor
    ASSERT_NE(other, nullptr);
    auto verifying = tls_context::client({tls_verify::peer, other->files.cert_file});
    ASSERT_TRUE(verifying) << verifying.error().text;
    auto e = connect(*verifying, *server_ctx);
    ASSERT_NE(e, nullptr);
    EXPECT_FALSE(handshake(*e, 0));
    EXPECT_EQ(e->client.state(), tls_state::failed);
    EXPECT_EQ(e->client.error().code, tls_errc::handshake);
    EXPECT_NE(e->client.error().text.find("certificate verify failed"), std::string::npos) << e->client.error().text;
    // The client's alert makes the server fail too, with a reason of its own.
    std::string ignored;
    EXPECT_FALSE(pump(e->client, e->server, ignored, 0));
    EXPECT_EQ(e->server.state(), tls_state::failed);
    EXPECT_FALSE(e->server.error().text.empty());
}

TEST_F(TlsSessionTest, ClientThatVerifiesAcceptsTheRightCertificateAndName) {
    auto verifying = tls_context::client({tls_verify::peer, cert->files.cert_file});
    ASSERT_TRUE(verifying) << verifying.error().text;
    auto good = connect(*verifying, *server_ctx, host);
    ASSERT_NE(good, nullptr);
    EXPECT_TRUE(handshake(*good, 0)) << good->client.error().text;
    auto wrong_name = connect(*verifying, *server_ctx, "other.invalid");
    ASSERT_NE(wrong_name, nullptr);
    EXPECT_FALSE(handshake(*wrong_name, 0));
    EXPECT_EQ(wrong_name->client.state(), tls_state::failed);
}

TEST(TlsVerify, IpLiteralIsCheckedAgainstTheCertificateAddresses) {
    // Outbound TLS to a static route verifies the route's address (issue 5).
    auto by_ip = make_cert("127.0.0.1");
    auto by_name = make_cert(host);
    ASSERT_NE(by_ip, nullptr);
    ASSERT_NE(by_name, nullptr);
    auto ip_server = tls_context::server(by_ip->credentials);
    auto name_server = tls_context::server(by_name->credentials);
    ASSERT_TRUE(ip_server && name_server);
    auto trusts_ip = tls_context::client({tls_verify::peer, by_ip->files.cert_file});
    auto trusts_name = tls_context::client({tls_verify::peer, by_name->files.cert_file});
    ASSERT_TRUE(trusts_ip && trusts_name);
    auto good = connect(*trusts_ip, *ip_server, "127.0.0.1");
    ASSERT_NE(good, nullptr);
    EXPECT_TRUE(handshake(*good, 0)) << good->client.error().text;
    EXPECT_EQ(SSL_get_servername(good->server.native(), TLSEXT_NAMETYPE_host_name), nullptr);  // no SNI
    auto other_ip = connect(*trusts_ip, *ip_server, "127.0.0.2");
    ASSERT_NE(other_ip, nullptr);
    EXPECT_FALSE(handshake(*other_ip, 0));
    EXPECT_NE(other_ip->client.error().text.find("certificate verify failed"), std::string::npos)
        << other_ip->client.error().text;
    // A certificate naming a host, not the address, does not pass for the address.
    auto name_only = connect(*trusts_name, *name_server, "127.0.0.1");
    ASSERT_NE(name_only, nullptr);
    EXPECT_FALSE(handshake(*name_only, 0));
}

TEST_F(TlsSessionTest, CloseNotifyEndsTheSession) {
    auto e = connect(*client_ctx, *server_ctx);
    ASSERT_NE(e, nullptr);
    ASSERT_TRUE(handshake(*e, 0));
    std::string wire;
    e->client.close(wire);
    ASSERT_FALSE(wire.empty());
    std::string again;
    e->client.close(again);
    EXPECT_TRUE(again.empty()) << "close() is idempotent";
    ASSERT_TRUE(e->server.feed_ciphertext(wire, e->server_plain));
    EXPECT_EQ(e->server.state(), tls_state::closed);
    std::string out;
    EXPECT_FALSE(e->server.encrypt("221 bye\r\n", out));
}

TEST(TlsResumption, TicketFromOneContextResumesOnAnotherWithTheSameKeys) {
    auto cert = make_cert(host);
    ASSERT_NE(cert, nullptr);
    auto keys = tls_ticket_keys::generate();
    auto other_keys = tls_ticket_keys::generate();
    ASSERT_TRUE(keys && other_keys);
    EXPECT_NE(keys->bytes, other_keys->bytes);
    auto shard_a = tls_context::server(cert->credentials, &*keys);
    auto shard_b = tls_context::server(cert->credentials, &*keys);
    auto elsewhere = tls_context::server(cert->credentials, &*other_keys);
    auto client_ctx = tls_context::client();
    ASSERT_TRUE(shard_a && shard_b && elsewhere && client_ctx);

    auto first = connect(*client_ctx, *shard_a);
    ASSERT_NE(first, nullptr);
    ASSERT_TRUE(handshake(*first, 0));
    EXPECT_FALSE(first->server.session_reused());
    const tls_saved_session saved = first->client.saved_session();
    ASSERT_TRUE(saved.resumable()) << "the TLS 1.3 ticket reached the client";

    auto resume = [&](const tls_context& server_ctx) {
        auto client = tls_session::create(*client_ctx, host, &saved);
        auto server = tls_session::create(server_ctx);
        EXPECT_TRUE(client && server);
        endpoints e{std::move(*client), std::move(*server), {}, {}};
        EXPECT_TRUE(handshake(e, 0)) << e.server.error().text;
        EXPECT_EQ(e.client.session_reused(), e.server.session_reused());
        return e.server.session_reused();
    };
    EXPECT_TRUE(resume(*shard_b)) << "same ticket keys: resumed on another shard";
    EXPECT_FALSE(resume(*elsewhere)) << "other keys: a full handshake";
}

TEST(TlsCredentials, MissingFileIsAFileError) {
    const auto r = tls_credentials::load_pem("/nonexistent/cert.pem", "/nonexistent/key.pem");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, tls_errc::file);
    EXPECT_NE(r.error().text.find("/nonexistent/cert.pem"), std::string::npos) << r.error().text;
}

TEST(TlsCredentials, GarbageIsNotACertificate) {
    temp_dir dir;
    const std::string junk = dir.path() + "/junk.pem";
    std::ofstream(junk) << "this is not PEM\n";
    const auto r = tls_credentials::load_pem(junk, junk);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, tls_errc::bad_certificate);
}

TEST(TlsCredentials, KeyOfAnotherCertificateIsRefused) {
    auto a = make_cert(host);
    auto b = make_cert(host);
    ASSERT_TRUE(a && b);
    const auto r = tls_credentials::load_pem(a->files.cert_file, b->files.key_file);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, tls_errc::key_mismatch);
    EXPECT_NE(r.error().text.find("does not match"), std::string::npos) << r.error().text;
}

TEST(TlsCredentials, CertificateFileIsNotAKey) {
    auto a = make_cert(host);
    ASSERT_NE(a, nullptr);
    const auto r = tls_credentials::load_pem(a->files.cert_file, a->files.cert_file);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, tls_errc::bad_key);
}

TEST(SelfSigned, GeneratedOnceThenReused) {
    temp_dir dir;
    const std::string tls_dir = dir.path() + "/spool/tls";  // neither level exists yet
    const auto first = ensure_self_signed(tls_dir, host);
    ASSERT_TRUE(first) << first.error().text;
    EXPECT_EQ(first->source, certificate_source::generated);
    EXPECT_EQ(first->cert_file, tls_dir + "/cert.pem");
    EXPECT_EQ(first->key_file, tls_dir + "/key.pem");
    struct stat st{};
    ASSERT_EQ(::stat(first->key_file.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << "the private key is readable by its owner only";
    ASSERT_EQ(::stat(tls_dir.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u);
    auto creds = tls_credentials::load_pem(first->cert_file, first->key_file);
    ASSERT_TRUE(creds) << creds.error().text;
    EXPECT_EQ(creds->common_name(), host);
    const std::int64_t now = std::time(nullptr);
    EXPECT_GT(creds->not_after(), now + 9 * 365 * 86400LL);
    EXPECT_LT(creds->not_after(), now + 11 * 365 * 86400LL);
    const std::string fingerprint = creds->sha256_fingerprint();
    EXPECT_EQ(fingerprint.rfind("SHA256 ", 0), 0u);
    EXPECT_EQ(fingerprint.size(), 7 + 32 * 3 - 1);

    const auto second = ensure_self_signed(tls_dir, host);
    ASSERT_TRUE(second) << second.error().text;
    EXPECT_EQ(second->source, certificate_source::reused);
    auto again = tls_credentials::load_pem(second->cert_file, second->key_file);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->sha256_fingerprint(), fingerprint) << "the same certificate across restarts";

    const auto renamed = ensure_self_signed(tls_dir, "other.tls-test.invalid");
    ASSERT_TRUE(renamed) << renamed.error().text;
    EXPECT_EQ(renamed->source, certificate_source::generated) << "a new host name gets a new certificate";
    auto other = tls_credentials::load_pem(renamed->cert_file, renamed->key_file);
    ASSERT_TRUE(other);
    EXPECT_EQ(other->common_name(), "other.tls-test.invalid");
    EXPECT_NE(other->sha256_fingerprint(), fingerprint);
}

TEST(SelfSigned, DamagedPairIsReplaced) {
    temp_dir dir;
    const auto first = ensure_self_signed(dir.path(), host);
    ASSERT_TRUE(first);
    std::ofstream(first->key_file, std::ios::trunc) << "garbage\n";
    const auto second = ensure_self_signed(dir.path(), host);
    ASSERT_TRUE(second) << second.error().text;
    EXPECT_EQ(second->source, certificate_source::generated);
    EXPECT_TRUE(tls_credentials::load_pem(second->cert_file, second->key_file));
}

TEST(SelfSigned, UnwritableDirectoryIsAFileError) {
    const auto r = ensure_self_signed("/proc/rr-tls-test/tls", host);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, tls_errc::file);
}

TEST(SelfSigned, LongHostNameKeepsTheFullNameInSubjectAltName) {
    const std::string name = std::string(70, 'a') + ".example";
    auto cert = make_cert(name);
    ASSERT_NE(cert, nullptr);
    EXPECT_EQ(cert->credentials.common_name(), name.substr(0, 64));
    auto server = tls_context::server(cert->credentials);
    auto verifying = tls_context::client({tls_verify::peer, cert->files.cert_file});
    ASSERT_TRUE(server && verifying);
    auto e = connect(*verifying, *server, name);
    ASSERT_NE(e, nullptr);
    EXPECT_TRUE(handshake(*e, 0)) << e->client.error().text;
}

TEST(KtlsProbe, ReportsOneLineThatMatchesItsVerdict) {
    const ktls_probe p = probe_ktls();
    EXPECT_EQ(p.detail.rfind("kTLS: ", 0), 0u) << p.detail;
    EXPECT_EQ(p.detail.find('\n'), std::string::npos);
    if (p.available) {
        EXPECT_NE(p.detail.find("offers the 'tls' ULP"), std::string::npos) << p.detail;
    } else {
        EXPECT_NE(p.detail.find("not available"), std::string::npos) << p.detail;
        EXPECT_NE(p.detail.find("TLS in user space (OpenSSL)"), std::string::npos) << p.detail;
    }
}

// The kTLS handshake path (a server session on the socket itself, stepped with non-blocking
// reads and writes) completes here whether or not the kernel takes the record layer; where it
// does not (no 'tls' ULP, as on the CI machine), neither direction is reported offloaded.
TEST(KtlsProbe, SocketHandshakeCompletesAndReportsTheOffload) {
    auto cert = make_cert("ktls.example");
    ASSERT_NE(cert, nullptr);
    const ktls_handshake_probe hp = probe_ktls_handshake(cert->credentials);
    EXPECT_NE(hp.detail.find("kTLS handshake probe (TLSv1.3 "), std::string::npos) << hp.detail;
    EXPECT_EQ(hp.detail.find('\n'), std::string::npos);
    if (!probe_ktls().available) {
        EXPECT_FALSE(hp.sends) << hp.detail;
        EXPECT_FALSE(hp.receives) << hp.detail;
        EXPECT_NE(hp.detail.find("kernel does not send and does not receive"), std::string::npos) << hp.detail;
    }
}

}  // namespace
}  // namespace ringrelay::core
