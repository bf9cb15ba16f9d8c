// core/tls.cc: see tls.h. Every OpenSSL call that can fail has its error queue read right
// after it (openssl_reason) and cleared, so one session's failure never leaks into another's
// report on the same thread.
#include "core/tls.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <limits>
#include <memory>

#ifndef TCP_ULP
#define TCP_ULP 31  // linux/tcp.h, Linux 4.13
#endif

namespace ringrelay::core {
namespace {

// Self-signed certificates: 10 years; reused while valid for at least another day.
constexpr int self_signed_days = 3650;
constexpr std::int64_t reuse_margin_s = 24 * 3600;
// X.509 upper bound for a common name (RFC 5280 ub-common-name).
constexpr std::size_t max_common_name = 64;

struct bio_free { void operator()(BIO* b) const noexcept { BIO_free_all(b); } };
struct x509_free { void operator()(X509* x) const noexcept { X509_free(x); } };
struct pkey_free { void operator()(EVP_PKEY* k) const noexcept { EVP_PKEY_free(k); } };
struct bn_free { void operator()(BIGNUM* b) const noexcept { BN_free(b); } };
struct ctx_free { void operator()(SSL_CTX* c) const noexcept { SSL_CTX_free(c); } };
struct names_free { void operator()(GENERAL_NAMES* g) const noexcept { GENERAL_NAMES_free(g); } };
using bio_ptr = std::unique_ptr<BIO, bio_free>;
using x509_ptr = std::unique_ptr<X509, x509_free>;
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_free>;
using bn_ptr = std::unique_ptr<BIGNUM, bn_free>;
using ctx_ptr = std::unique_ptr<SSL_CTX, ctx_free>;
using names_ptr = std::unique_ptr<GENERAL_NAMES, names_free>;

// The first reason on this thread's OpenSSL error queue ("wrong version number"), then the
// queue is cleared. `fallback` when the queue is empty.
std::string openssl_reason(std::string_view fallback = "unknown error") {
    const unsigned long first = ERR_get_error();
    ERR_clear_error();
    if (first == 0) return std::string(fallback);
    if (const char* reason = ERR_reason_error_string(first); reason != nullptr) return reason;
    char buf[256];
    ERR_error_string_n(first, buf, sizeof buf);
    return buf;
}

std::unexpected<tls_error> failure(tls_errc code, std::string text) {
    return std::unexpected(tls_error{code, std::move(text)});
}

std::string common_name_of(X509* cert) {
    if (cert == nullptr) return {};
    X509_NAME* name = X509_get_subject_name(cert);
    const int index = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (index < 0) return {};
    const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
    unsigned char* utf8 = nullptr;
    const int n = ASN1_STRING_to_UTF8(&utf8, data);
    if (n < 0) {
        ERR_clear_error();
        return {};
    }
    std::string out(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(n));
    OPENSSL_free(utf8);
    return out;
}

// Writes `bytes` to `path` through a temporary file (mode `mode`), fsync, rename.
std::expected<void, tls_error> write_file_atomically(const std::string& path, const std::string& bytes, mode_t mode) {
    const std::string tmp = path + ".tmp";
    (void)::unlink(tmp.c_str());
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) return failure(tls_errc::file, "cannot create " + tmp + ": " + std::strerror(errno));
    std::size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            const int e = errno;
            ::close(fd);
            (void)::unlink(tmp.c_str());
            return failure(tls_errc::file, "cannot write " + tmp + ": " + std::strerror(e));
        }
        done += static_cast<std::size_t>(n);
    }
    // The umask may have narrowed `mode`; the key must be exactly 0600 either way.
    if (::fchmod(fd, mode) != 0 || ::fsync(fd) != 0) {
        const int e = errno;
        ::close(fd);
        (void)::unlink(tmp.c_str());
        return failure(tls_errc::file, "cannot sync " + tmp + ": " + std::strerror(e));
    }
    ::close(fd);
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        const int e = errno;
        (void)::unlink(tmp.c_str());
        return failure(tls_errc::file, "cannot rename " + tmp + " to " + path + ": " + std::strerror(e));
    }
    return {};
}

std::expected<std::string, tls_error> pem_of(EVP_PKEY* key) {
    bio_ptr mem(BIO_new(BIO_s_mem()));
    if (!mem || PEM_write_bio_PrivateKey(mem.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
        return failure(tls_errc::setup, "cannot encode the private key: " + openssl_reason());
    char* data = nullptr;
    const long n = BIO_get_mem_data(mem.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
}

std::expected<std::string, tls_error> pem_of(X509* cert) {
    bio_ptr mem(BIO_new(BIO_s_mem()));
    if (!mem || PEM_write_bio_X509(mem.get(), cert) != 1)
        return failure(tls_errc::setup, "cannot encode the certificate: " + openssl_reason());
    char* data = nullptr;
    const long n = BIO_get_mem_data(mem.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
}

bool add_extension(X509* cert, X509V3_CTX* ctx, int nid, const char* value) {
    X509_EXTENSION* ext = X509V3_EXT_nconf_nid(nullptr, ctx, nid, value);
    if (ext == nullptr) return false;
    const int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok == 1;
}

// An EC P-256 key and a self-signed certificate for `hostname`.
std::expected<std::pair<std::string, std::string>, tls_error> make_self_signed(std::string_view hostname) {
    pkey_ptr key(EVP_EC_gen("P-256"));
    if (!key) return failure(tls_errc::setup, "cannot generate an EC P-256 key: " + openssl_reason());
    x509_ptr cert(X509_new());
    if (!cert) return failure(tls_errc::setup, "X509_new: " + openssl_reason());
    unsigned char serial[16];
    if (RAND_bytes(serial, sizeof serial) != 1) return failure(tls_errc::setup, "RAND_bytes: " + openssl_reason());
    serial[0] &= 0x7f;  // a positive INTEGER (RFC 5280 §4.1.2.2)
    serial[0] |= 0x01;  // and not shortened
    bn_ptr serial_bn(BN_bin2bn(serial, sizeof serial, nullptr));
    const std::string cn(hostname.substr(0, max_common_name));
    X509_NAME* name = X509_get_subject_name(cert.get());
    bool ok = serial_bn && X509_set_version(cert.get(), 2) == 1 &&
              BN_to_ASN1_INTEGER(serial_bn.get(), X509_get_serialNumber(cert.get())) != nullptr &&
              X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) != nullptr &&
              X509_time_adj_ex(X509_getm_notAfter(cert.get()), self_signed_days, 0, nullptr) != nullptr &&
              X509_set_pubkey(cert.get(), key.get()) == 1 &&
              X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.data()),
                                         static_cast<int>(cn.size()), -1, 0) == 1 &&
              X509_set_issuer_name(cert.get(), name) == 1;
    if (!ok) return failure(tls_errc::setup, "cannot build the certificate: " + openssl_reason());
    // subjectAltName built by hand: the host name is never parsed as configuration text.
    names_ptr names(GENERAL_NAMES_new());
    GENERAL_NAME* dns = GENERAL_NAME_new();
    ASN1_IA5STRING* text = ASN1_IA5STRING_new();
    if (!names || dns == nullptr || text == nullptr ||
        ASN1_STRING_set(text, hostname.data(), static_cast<int>(hostname.size())) != 1) {
        GENERAL_NAME_free(dns);
        ASN1_IA5STRING_free(text);
        return failure(tls_errc::setup, "cannot build subjectAltName: " + openssl_reason());
    }
    GENERAL_NAME_set0_value(dns, GEN_DNS, text);
    if (sk_GENERAL_NAME_push(names.get(), dns) <= 0) {
        GENERAL_NAME_free(dns);
        return failure(tls_errc::setup, "cannot build subjectAltName: " + openssl_reason());
    }
    // A host "name" that is an IP literal also gets an iPAddress entry, which is what a
    // verifying client given that address checks (RFC 6125 §6.2).
    const std::string host_text(hostname);
    unsigned char raw[sizeof(in6_addr)];
    const bool v4 = ::inet_pton(AF_INET, host_text.c_str(), raw) == 1;
    if (v4 || ::inet_pton(AF_INET6, host_text.c_str(), raw) == 1) {
        GENERAL_NAME* ip = GENERAL_NAME_new();
        ASN1_OCTET_STRING* bytes = ASN1_OCTET_STRING_new();
        if (ip == nullptr || bytes == nullptr || ASN1_OCTET_STRING_set(bytes, raw, v4 ? 4 : 16) != 1) {
            GENERAL_NAME_free(ip);
            ASN1_OCTET_STRING_free(bytes);
            return failure(tls_errc::setup, "cannot build subjectAltName: " + openssl_reason());
        }
        GENERAL_NAME_set0_value(ip, GEN_IPADD, bytes);
        if (sk_GENERAL_NAME_push(names.get(), ip) <= 0) {
            GENERAL_NAME_free(ip);
            return failure(tls_errc::setup, "cannot build subjectAltName: " + openssl_reason());
        }
    }
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
    ok = X509_add1_ext_i2d(cert.get(), NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT) == 1 &&
         add_extension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE") &&
         add_extension(cert.get(), &ctx, NID_key_usage, "critical,digitalSignature") &&
         add_extension(cert.get(), &ctx, NID_ext_key_usage, "serverAuth") &&
         add_extension(cert.get(), &ctx, NID_subject_key_identifier, "hash") &&
         X509_sign(cert.get(), key.get(), EVP_sha256()) > 0;
    if (!ok) return failure(tls_errc::setup, "cannot sign the certificate: " + openssl_reason());
    auto key_pem = pem_of(key.get());
    if (!key_pem) return std::unexpected(key_pem.error());
    auto cert_pem = pem_of(cert.get());
    if (!cert_pem) return std::unexpected(cert_pem.error());
    return std::pair{std::move(*cert_pem), std::move(*key_pem)};
}

// A passphrase callback that refuses: an encrypted key fails to load instead of prompting
// on the terminal (which would block start-up).
int no_passphrase(char*, int, int, void*) { return -1; }

}  // namespace

// --- tls_credentials ---------------------------------------------------------------------------

std::expected<tls_credentials, tls_error> tls_credentials::load_pem(const std::string& cert_file,
                                                                  const std::string& key_file) {
    ERR_clear_error();
    tls_credentials c;
    {
        bio_ptr in(BIO_new_file(cert_file.c_str(), "r"));
        if (!in) {
            ERR_clear_error();
            return failure(tls_errc::file, "cannot read certificate " + cert_file + ": " + std::strerror(errno));
        }
        c._cert = PEM_read_bio_X509_AUX(in.get(), nullptr, no_passphrase, nullptr);
        if (c._cert == nullptr)
            return failure(tls_errc::bad_certificate,
                           "no PEM certificate in " + cert_file + ": " + openssl_reason("no certificate found"));
        while (X509* extra = PEM_read_bio_X509(in.get(), nullptr, no_passphrase, nullptr)) c._chain.push_back(extra);
        // The loop ends on "no start line" at the end of the file; anything else is damage.
        const unsigned long e = ERR_peek_last_error();
        if (e != 0 && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE))
            return failure(tls_errc::bad_certificate,
                           "bad certificate chain in " + cert_file + ": " + openssl_reason());
        ERR_clear_error();
    }
    {
        bio_ptr in(BIO_new_file(key_file.c_str(), "r"));
        if (!in) {
            ERR_clear_error();
            return failure(tls_errc::file, "cannot read key " + key_file + ": " + std::strerror(errno));
        }
        c._key = PEM_read_bio_PrivateKey(in.get(), nullptr, no_passphrase, nullptr);
        if (c._key == nullptr)
            return failure(tls_errc::bad_key, "no usable PEM private key in " + key_file + " (encrypted keys are not "
                                              "supported): " + openssl_reason("no key found"));
    }
    if (X509_check_private_key(c._cert, c._key) != 1)
        return failure(tls_errc::key_mismatch,
                       "the key in " + key_file + " does not match the certificate in " + cert_file + ": " +
                           openssl_reason("mismatch"));
    return c;
}

tls_credentials::tls_credentials(tls_credentials&& other) noexcept
    : _cert(other._cert), _key(other._key), _chain(std::move(other._chain)) {
    other._cert = nullptr;
    other._key = nullptr;
    other._chain.clear();
}

tls_credentials& tls_credentials::operator=(tls_credentials&& other) noexcept {
    if (this != &other) {
        reset();
        _cert = other._cert;
        _key = other._key;
        _chain = std::move(other._chain);
        other._cert = nullptr;
        other._key = nullptr;
        other._chain.clear();
    }
    return *this;
}

tls_credentials::~tls_credentials() { reset(); }

void tls_credentials::reset() noexcept {
    X509_free(_cert);
    EVP_PKEY_free(_key);
    for (X509* x : _chain) X509_free(x);
    _cert = nullptr;
    _key = nullptr;
    _chain.clear();
}

std::string tls_credentials::sha256_fingerprint() const {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (_cert == nullptr || X509_digest(_cert, EVP_sha256(), md, &len) != 1) {
        ERR_clear_error();
        return {};
    }
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out = "SHA256 ";
    for (unsigned int i = 0; i < len; ++i) {
        if (i != 0) out.push_back(':');
        out.push_back(hex[md[i] >> 4]);
        out.push_back(hex[md[i] & 0xf]);
    }
    return out;
}

std::string tls_credentials::common_name() const { return common_name_of(_cert); }

std::int64_t tls_credentials::not_after() const noexcept {
    if (_cert == nullptr) return 0;
    std::tm tm{};
    if (ASN1_TIME_to_tm(X509_get0_notAfter(_cert), &tm) != 1) {
        ERR_clear_error();
        return 0;
    }
    return static_cast<std::int64_t>(::timegm(&tm));
}

// --- self-signed ---------------------------------------------------------------------------------

std::expected<self_signed_files, tls_error> ensure_self_signed(const std::string& dir, std::string_view hostname) {
    if (hostname.empty()) return failure(tls_errc::setup, "self-signed certificate: empty host name");
    // Each missing level of DIR is created (the spool may not exist yet on a first start):
    // 0750 like the spool's own directories, DIR itself 0700.
    for (std::size_t pos = 1; pos <= dir.size(); ++pos) {
        if (pos != dir.size() && dir[pos] != '/') continue;
        const std::string level = dir.substr(0, pos);
        if (::mkdir(level.c_str(), pos == dir.size() ? 0700 : 0750) != 0 && errno != EEXIST)
            return failure(tls_errc::file, "cannot create " + level + ": " + std::strerror(errno));
    }
    self_signed_files files{dir + "/cert.pem", dir + "/key.pem", certificate_source::reused};
    if (::access(files.cert_file.c_str(), F_OK) == 0 && ::access(files.key_file.c_str(), F_OK) == 0) {
        auto existing = tls_credentials::load_pem(files.cert_file, files.key_file);
        if (existing && existing->common_name() == hostname.substr(0, max_common_name) &&
            existing->not_after() > static_cast<std::int64_t>(std::time(nullptr)) + reuse_margin_s) {
            return files;
        }
    }
    auto made = make_self_signed(hostname);
    if (!made) return std::unexpected(made.error());
    // The key first: a crash between the renames leaves a pair that does not match, which
    // the next start replaces.
    if (auto ok = write_file_atomically(files.key_file, made->second, 0600); !ok) return std::unexpected(ok.error());
    if (auto ok = write_file_atomically(files.cert_file, made->first, 0644); !ok) return std::unexpected(ok.error());
    if (const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); fd >= 0) {
        (void)::fsync(fd);
        ::close(fd);
    }
    files.source = certificate_source::generated;
    return files;
}

std::expected<tls_ticket_keys, tls_error> tls_ticket_keys::generate() {
    tls_ticket_keys k;
    if (RAND_bytes(k.bytes.data(), static_cast<int>(k.bytes.size())) != 1)
        return failure(tls_errc::setup, "RAND_bytes: " + openssl_reason());
    return k;
}

// --- tls_context ---------------------------------------------------------------------------------

std::expected<tls_context, tls_error> tls_context::server(const tls_credentials& credentials,
                                                        const tls_ticket_keys* keys) {
    ERR_clear_error();
    ctx_ptr ctx(SSL_CTX_new(TLS_server_method()));
    if (!ctx) return failure(tls_errc::setup, "SSL_CTX_new: " + openssl_reason());
    SSL_CTX* c = ctx.get();
    bool ok = SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION) == 1;
    // No renegotiation (a CPU-exhaustion lever, and nothing SMTP needs); the server picks the
    // cipher from OpenSSL's default list; idle connections give their record buffers back.
    SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
    ok = ok && SSL_CTX_use_certificate(c, credentials.certificate()) == 1 &&
         SSL_CTX_use_PrivateKey(c, credentials.key()) == 1 && SSL_CTX_check_private_key(c) == 1;
    for (X509* extra : credentials.chain()) ok = ok && SSL_CTX_add1_chain_cert(c, extra) == 1;
    static constexpr unsigned char id_context[] = "ringrelay";
    ok = ok && SSL_CTX_set_session_id_context(c, id_context, sizeof id_context - 1) == 1;
    if (!ok) return failure(tls_errc::setup, "cannot set up the server TLS context: " + openssl_reason());
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_SERVER);
    // One TLS 1.3 ticket per handshake: an SMTP client opens one connection at a time.
    (void)SSL_CTX_set_num_tickets(c, 1);
    if (keys != nullptr) {
        unsigned char copy[80];
        std::memcpy(copy, keys->bytes.data(), sizeof copy);
        if (SSL_CTX_set_tlsext_ticket_keys(c, copy, sizeof copy) != 1)
            return failure(tls_errc::setup, "cannot set the session ticket keys: " + openssl_reason());
        OPENSSL_cleanse(copy, sizeof copy);
    }
    return tls_context(ctx.release(), tls_role::server);
}

std::expected<void, tls_error> tls_context::set_ciphers(const std::string& tls12, const std::string& tls13) {
    ERR_clear_error();
    if (!tls12.empty() && SSL_CTX_set_cipher_list(_ctx, tls12.c_str()) != 1)
        return failure(tls_errc::setup, "TLS 1.2 cipher list '" + tls12 + "' refused: " + openssl_reason());
    if (!tls13.empty() && SSL_CTX_set_ciphersuites(_ctx, tls13.c_str()) != 1)
        return failure(tls_errc::setup, "TLS 1.3 cipher suites '" + tls13 + "' refused: " + openssl_reason());
    return {};
}

std::expected<tls_context, tls_error> tls_context::client(const tls_client_options& options) {
    ERR_clear_error();
    ctx_ptr ctx(SSL_CTX_new(TLS_client_method()));
    if (!ctx) return failure(tls_errc::setup, "SSL_CTX_new: " + openssl_reason());
    SSL_CTX* c = ctx.get();
    if (SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION) != 1)
        return failure(tls_errc::setup, "cannot set the protocol floor: " + openssl_reason());
    SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
    // The caller keeps the sessions it wants (queue/delivery); OpenSSL's own client cache
    // would only grow with every ticket.
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    if (options.verify == tls_verify::peer) {
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nullptr);
        const int loaded = options.ca_file.empty() ? SSL_CTX_set_default_verify_paths(c)
                                                   : SSL_CTX_load_verify_locations(c, options.ca_file.c_str(), nullptr);
        if (loaded != 1)
            return failure(tls_errc::file, "cannot load CA certificates" +
                                               (options.ca_file.empty() ? std::string() : " from " + options.ca_file) +
                                               ": " + openssl_reason());
        // A file that parses to nothing (empty, or no PEM certificate in it) would make every
        // verification fail later, far from the cause.
        if (!options.ca_file.empty() && sk_X509_OBJECT_num(X509_STORE_get0_objects(SSL_CTX_get_cert_store(c))) <= 0)
            return failure(tls_errc::file, "no CA certificate in " + options.ca_file);
    } else {
        SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nullptr);
    }
    return tls_context(ctx.release(), tls_role::client);
}

tls_context::tls_context(tls_context&& other) noexcept : _ctx(other._ctx), _role(other._role) { other._ctx = nullptr; }

tls_context& tls_context::operator=(tls_context&& other) noexcept {
    if (this != &other) {
        SSL_CTX_free(_ctx);
        _ctx = other._ctx;
        _role = other._role;
        other._ctx = nullptr;
    }
    return *this;
}

tls_context::~tls_context() { SSL_CTX_free(_ctx); }

// --- tls_session ---------------------------------------------------------------------------------

tls_saved_session& tls_saved_session::operator=(tls_saved_session&& other) noexcept {
    if (this != &other) {
        SSL_SESSION_free(_session);
        _session = other._session;
        other._session = nullptr;
    }
    return *this;
}

tls_saved_session::~tls_saved_session() { SSL_SESSION_free(_session); }

bool tls_saved_session::resumable() const noexcept {
    return _session != nullptr && SSL_SESSION_is_resumable(_session) == 1;
}

std::expected<tls_session, tls_error> tls_session::create(const tls_context& context, std::string_view server_name,
                                                        const tls_saved_session* resume) {
    ERR_clear_error();
    tls_session s;
    s._ssl = SSL_new(context.native());
    if (s._ssl == nullptr) return failure(tls_errc::setup, "SSL_new: " + openssl_reason());
    BIO* in = BIO_new(BIO_s_mem());
    BIO* out = BIO_new(BIO_s_mem());
    if (in == nullptr || out == nullptr) {
        BIO_free(in);
        BIO_free(out);
        return failure(tls_errc::setup, "BIO_new: " + openssl_reason());
    }
    // An empty memory BIO means "retry later", never end of file.
    BIO_set_mem_eof_return(in, -1);
    BIO_set_mem_eof_return(out, -1);
    SSL_set_bio(s._ssl, in, out);  // the SSL owns both from here
    s._network_in = in;
    s._network_out = out;
    if (context.role() == tls_role::server) {
        SSL_set_accept_state(s._ssl);
        return s;
    }
    SSL_set_connect_state(s._ssl);
    if (!server_name.empty()) {
        const std::string name(server_name);
        const bool verify = (SSL_get_verify_mode(s._ssl) & SSL_VERIFY_PEER) != 0;
        // An IP literal is no SNI host name (RFC 6066 §3) and is checked against the
        // certificate's iPAddress names (RFC 6125 §6.2; OpenSSL 3.0's SSL_set1_host matches
        // DNS names only).
        unsigned char ip[sizeof(in6_addr)];
        const bool literal = ::inet_pton(AF_INET, name.c_str(), ip) == 1 || ::inet_pton(AF_INET6, name.c_str(), ip) == 1;
        const bool ok = literal ? (!verify || X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s._ssl), name.c_str()) == 1)
                                : SSL_set_tlsext_host_name(s._ssl, name.c_str()) == 1 &&
                                      (!verify || SSL_set1_host(s._ssl, name.c_str()) == 1);
        if (!ok) return failure(tls_errc::setup, "cannot set the server name: " + openssl_reason());
    }
    if (resume != nullptr && resume->native() != nullptr && SSL_set_session(s._ssl, resume->native()) != 1)
        return failure(tls_errc::setup, "cannot offer the saved session: " + openssl_reason());
    // The ClientHello, ready in take_output().
    const int r = SSL_do_handshake(s._ssl);
    const int e = SSL_get_error(s._ssl, r);
    if (r != 1 && e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
        return failure(tls_errc::handshake, "TLS handshake failed: " + openssl_reason());
    return s;
}

tls_session::tls_session(tls_session&& other) noexcept
    : _ssl(other._ssl),
      _network_in(other._network_in),
      _network_out(other._network_out),
      _state(other._state),
      _close_sent(other._close_sent),
      _error(std::move(other._error)) {
    other._ssl = nullptr;
    other._network_in = nullptr;
    other._network_out = nullptr;
}

tls_session& tls_session::operator=(tls_session&& other) noexcept {
    if (this != &other) {
        release();
        _ssl = other._ssl;
        _network_in = other._network_in;
        _network_out = other._network_out;
        _state = other._state;
        _close_sent = other._close_sent;
        _error = std::move(other._error);
        other._ssl = nullptr;
        other._network_in = nullptr;
        other._network_out = nullptr;
    }
    return *this;
}

tls_session::~tls_session() { release(); }

void tls_session::release() noexcept {
    SSL_free(_ssl);  // frees both BIOs
    _ssl = nullptr;
    _network_in = nullptr;
    _network_out = nullptr;
}

std::expected<void, tls_error> tls_session::fail(tls_errc code, std::string_view what) {
    std::string reason = openssl_reason("");
    if (reason.empty() && _ssl != nullptr) {
        const long verify = SSL_get_verify_result(_ssl);
        if (verify != X509_V_OK) reason = X509_verify_cert_error_string(verify);
    }
    if (reason.empty()) reason = "unexpected end of the TLS stream";
    _state = tls_state::failed;
    _error = tls_error{code, std::string(what) + ": " + reason};
    return std::unexpected(_error);
}

std::expected<void, tls_error> tls_session::feed_ciphertext(std::string_view in, std::string& plaintext) {
    if (_state == tls_state::failed) return std::unexpected(_error);
    if (_state == tls_state::closed) return {};
    ERR_clear_error();
    while (!in.empty()) {
        const int chunk = static_cast<int>(std::min<std::size_t>(in.size(), 1u << 30));
        const int n = BIO_write(_network_in, in.data(), chunk);
        if (n <= 0) return fail(tls_errc::setup, "cannot buffer TLS input");
        in.remove_prefix(static_cast<std::size_t>(n));
    }
    if (_state == tls_state::handshaking) {
        const int r = SSL_do_handshake(_ssl);
        if (r != 1) {
            const int e = SSL_get_error(_ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return {};
            return fail(tls_errc::handshake, "TLS handshake failed");
        }
        _state = tls_state::established;
    }
    // Application data that came with (or after) the end of the handshake.
    char buf[16384];
    for (;;) {
        std::size_t n = 0;
        if (SSL_read_ex(_ssl, buf, sizeof buf, &n) == 1) {
            plaintext.append(buf, n);
            continue;
        }
        const int e = SSL_get_error(_ssl, 0);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
        if (e == SSL_ERROR_ZERO_RETURN) {
            _state = tls_state::closed;
            ERR_clear_error();
            break;
        }
        return fail(tls_errc::record, "TLS record error");
    }
    return {};
}

std::expected<void, tls_error> tls_session::encrypt(std::string_view plaintext, std::string& ciphertext) {
    switch (_state) {
    case tls_state::failed: return std::unexpected(_error);
    case tls_state::closed: return failure(tls_errc::closed, "TLS session already closed");
    case tls_state::handshaking:
        if (!plaintext.empty()) return failure(tls_errc::setup, "TLS data before the end of the handshake");
        break;
    case tls_state::established: break;
    }
    ERR_clear_error();
    while (!plaintext.empty() && !_close_sent) {
        std::size_t written = 0;
        if (SSL_write_ex(_ssl, plaintext.data(), plaintext.size(), &written) != 1)
            return fail(tls_errc::record, "TLS write failed");
        plaintext.remove_prefix(written);
    }
    take_output(ciphertext);
    return {};
}

std::expected<tls_session, tls_error> tls_session::create_on_socket(const tls_context& context, int fd) {
    ERR_clear_error();
    if (context.role() != tls_role::server) return failure(tls_errc::setup, "socket sessions are server sessions");
    tls_session s;
    s._ssl = SSL_new(context.native());
    if (s._ssl == nullptr) return failure(tls_errc::setup, "SSL_new: " + openssl_reason());
    // SSL_set_fd makes a socket BIO that does not close the fd (BIO_NOCLOSE).
    if (SSL_set_fd(s._ssl, fd) != 1) return failure(tls_errc::setup, "SSL_set_fd: " + openssl_reason());
    SSL_set_options(s._ssl, SSL_OP_ENABLE_KTLS);
    // AES-GCM, which every kTLS kernel implements (ChaCha20-Poly1305 needs Linux 5.11 and an
    // OpenSSL built for it) and which the start-up probe exercises: a session the kernel then
    // refuses would fail after its handshake.
    if (SSL_set_ciphersuites(s._ssl, "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256") != 1 ||
        SSL_set_cipher_list(s._ssl, "ECDHE+AESGCM") != 1)
        return failure(tls_errc::setup, "kTLS cipher list: " + openssl_reason());
    SSL_set_accept_state(s._ssl);
    return s;
}

std::expected<tls_session::socket_step, tls_error> tls_session::handshake_on_socket() {
    if (_state == tls_state::failed) return std::unexpected(_error);
    if (_state != tls_state::handshaking) return socket_step::done;
    ERR_clear_error();
    const int r = SSL_do_handshake(_ssl);
    if (r == 1) {
        _state = tls_state::established;
        return socket_step::done;
    }
    switch (SSL_get_error(_ssl, r)) {
    case SSL_ERROR_WANT_READ: return socket_step::want_read;
    case SSL_ERROR_WANT_WRITE: return socket_step::want_write;
    default: break;
    }
    auto failed = fail(tls_errc::handshake, "TLS handshake failed");
    return std::unexpected(failed.error());
}

bool tls_session::kernel_sends() const noexcept {
#ifndef OPENSSL_NO_KTLS
    return on_socket() && BIO_get_ktls_send(SSL_get_wbio(_ssl));
#else
    return false;
#endif
}

bool tls_session::kernel_receives() const noexcept {
#ifndef OPENSSL_NO_KTLS
    return on_socket() && BIO_get_ktls_recv(SSL_get_rbio(_ssl));
#else
    return false;
#endif
}

void tls_session::take_output(std::string& ciphertext) {
    if (_network_out == nullptr) return;
    for (;;) {
        const std::size_t pending = BIO_ctrl_pending(_network_out);
        if (pending == 0) return;
        const std::size_t at = ciphertext.size();
        const std::size_t want = std::min<std::size_t>(pending, 1u << 30);
        ciphertext.resize(at + want);
        const int n = BIO_read(_network_out, ciphertext.data() + at, static_cast<int>(want));
        ciphertext.resize(at + (n > 0 ? static_cast<std::size_t>(n) : 0));
        if (n <= 0) return;
    }
}

bool tls_session::has_output() const noexcept { return _network_out != nullptr && BIO_ctrl_pending(_network_out) > 0; }

void tls_session::close(std::string& ciphertext) {
    if (_close_sent || _ssl == nullptr || (_state != tls_state::established && _state != tls_state::closed)) return;
    _close_sent = true;
    ERR_clear_error();
    (void)SSL_shutdown(_ssl);  // 0: our close_notify is written, the peer's not yet seen
    ERR_clear_error();
    take_output(ciphertext);
}

std::string_view tls_session::protocol_name() const noexcept {
    if (_ssl == nullptr || _state == tls_state::handshaking) return {};
    const char* v = SSL_get_version(_ssl);
    return v != nullptr ? std::string_view(v) : std::string_view();
}

std::string_view tls_session::cipher_name() const noexcept {
    const SSL_CIPHER* c = _ssl != nullptr ? SSL_get_current_cipher(_ssl) : nullptr;
    const char* name = c != nullptr ? SSL_CIPHER_get_name(c) : nullptr;
    return name != nullptr ? std::string_view(name) : std::string_view();
}

int tls_session::cipher_bits() const noexcept {
    const SSL_CIPHER* c = _ssl != nullptr ? SSL_get_current_cipher(_ssl) : nullptr;
    return c != nullptr ? SSL_CIPHER_get_bits(c, nullptr) : 0;
}

int tls_session::cipher_algorithm_bits() const noexcept {
    const SSL_CIPHER* c = _ssl != nullptr ? SSL_get_current_cipher(_ssl) : nullptr;
    int bits = 0;
    if (c != nullptr) (void)SSL_CIPHER_get_bits(c, &bits);
    return bits;
}

bool tls_session::session_reused() const noexcept { return _ssl != nullptr && SSL_session_reused(_ssl) == 1; }

tls_saved_session tls_session::saved_session() const noexcept {
    // A copy: OpenSSL marks a connection's own session not resumable when the SSL is freed
    // without our close_notify having been sent (ssl_clear_bad_session), which a connection
    // the peer ended first, or a reset one, never sends.
    SSL_SESSION* own = _ssl != nullptr ? SSL_get1_session(_ssl) : nullptr;
    SSL_SESSION* copy = own != nullptr ? SSL_SESSION_dup(own) : nullptr;
    SSL_SESSION_free(own);
    return tls_saved_session(copy);
}

std::string tls_session::peer_common_name() const {
    return _ssl != nullptr ? common_name_of(SSL_get0_peer_certificate(_ssl)) : std::string();
}

}  // namespace ringrelay::core
