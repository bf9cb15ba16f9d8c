// core/tls.h: the TLS engine. OpenSSL 3 driven through memory BIOs: the engine never touches
// a socket and never blocks, so handshakes and records ride the shard's io_uring like
// plaintext (the caller moves ciphertext between the socket and the engine). Knows nothing of
// SMTP. Also here: loading a PEM certificate and key, generating a self-signed certificate
// for a host name (kept in a directory, reused on the next start), and the start-up kTLS
// probe (TCP_ULP "tls", Linux 4.13+; optional kernel features are probed once at start-up).
//
// Protocols: TLS 1.2 floor (RFC 5246), TLS 1.3 default (RFC 8446); OpenSSL's default cipher
// list; renegotiation refused; resumption by session tickets (RFC 5077, RFC 8446 §4.6.1)
// whose keys the caller may share between contexts, plus each server context's own session
// cache for TLS 1.2 session ids.
//
// Threading: a tls_credentials is immutable once loaded and may be shared read-only by every
// shard. A tls_context and its tls_sessions belong to one shard thread (one context per shard
// keeps OpenSSL's per-context locks uncontended). Every OpenSSL object made here is freed by
// the destructor of the object that holds it.
// SECURITY: tls_session::feed_ciphertext() reads network input; load_pem() and
// ensure_self_signed() read and write operator-controlled files.
#pragma once
#include <openssl/types.h>

struct ssl_session_st;  // SSL_SESSION (openssl/ssl.h)

#include <array>
#include <cstdint>
#include <expected>
#include <string>
#include <string_view>
#include <vector>

namespace ringrelay::core {

enum class tls_errc : std::uint8_t {
    file,             // a certificate or key file cannot be read or written
    bad_certificate,  // not a PEM certificate, or expired
    bad_key,          // not a PEM private key
    key_mismatch,     // the key does not belong to the certificate
    setup,            // OpenSSL refused a setting or ran out of memory
    handshake,        // the handshake failed (peer's fault, or ours: see text)
    record,           // a record after the handshake was bad (decryption, protocol)
    closed,           // encrypt() after the session ended
};

struct tls_error {
    tls_errc code = tls_errc::setup;
    std::string text;  // one line for logs: what failed and OpenSSL's reason
};

// A certificate (with any intermediate certificates that followed it in the PEM file) and its
// private key. Lifecycle: load_pem() or ensure_self_signed() at start-up; immutable after;
// shared read-only by every shard; outlives every tls_context made from it.
class tls_credentials {
public:
    // Reads a PEM certificate chain (leaf first) and a PEM private key; checks that they match.
    [[nodiscard]] static std::expected<tls_credentials, tls_error> load_pem(const std::string& cert_file,
                                                                           const std::string& key_file);
    tls_credentials(tls_credentials&& other) noexcept;
    tls_credentials& operator=(tls_credentials&& other) noexcept;
    tls_credentials(const tls_credentials&) = delete;
    tls_credentials& operator=(const tls_credentials&) = delete;
    ~tls_credentials();

    // "SHA256 AB:CD:..." of the leaf certificate's DER (what `openssl x509 -fingerprint
    // -sha256` prints after "sha256 Fingerprint=").
    [[nodiscard]] std::string sha256_fingerprint() const;
    // The leaf's subject common name, or "" if it has none.
    [[nodiscard]] std::string common_name() const;
    // The leaf's notAfter as UNIX seconds.
    [[nodiscard]] std::int64_t not_after() const noexcept;

    [[nodiscard]] X509* certificate() const noexcept { return _cert; }
    [[nodiscard]] EVP_PKEY* key() const noexcept { return _key; }
    [[nodiscard]] const std::vector<X509*>& chain() const noexcept { return _chain; }

private:
    tls_credentials() = default;
    void reset() noexcept;
    X509* _cert = nullptr;        // owned
    EVP_PKEY* _key = nullptr;     // owned
    std::vector<X509*> _chain;    // owned; intermediates, in file order
};

// Where a server's certificate came from (for the start-up line).
enum class certificate_source : std::uint8_t {
    configured,  // --tls-cert/--tls-key
    generated,   // self-signed, made now
    reused,      // self-signed, made by an earlier start
};

struct self_signed_files {
    std::string cert_file;  // DIR/cert.pem (0644)
    std::string key_file;   // DIR/key.pem (0600)
    certificate_source source = certificate_source::generated;
};

// Makes sure DIR holds a self-signed certificate for `hostname` (EC P-256, CN and
// subjectAltName DNS = hostname, plus iPAddress when hostname is an IP literal, valid for 10
// years, serverAuth) and its key. An existing
// pair is reused when it loads, matches, names `hostname` and is valid for at least another
// day; otherwise a new pair replaces it (written to temporary files, fsynced, renamed). DIR
// is created with mode 0700 if missing (missing parents 0750); the key file has mode 0600.
[[nodiscard]] std::expected<self_signed_files, tls_error> ensure_self_signed(const std::string& dir,
                                                                            std::string_view hostname);

// 80 bytes of session-ticket key material (OpenSSL's SSL_CTX_set_tlsext_ticket_keys
// layout). Contexts given the same keys accept each other's tickets: a client resumes
// whichever shard SO_REUSEPORT gives it.
struct tls_ticket_keys {
    std::array<unsigned char, 80> bytes{};
    [[nodiscard]] static std::expected<tls_ticket_keys, tls_error> generate();
};

enum class tls_role : std::uint8_t { server, client };

enum class tls_verify : std::uint8_t {
    none,  // accept any certificate (opportunistic TLS)
    peer,  // the chain must verify against ca_file (or the system store) and name the host
};

// Client settings (outbound STARTTLS in delivery, ringrelay-bench --starttls).
struct tls_client_options {
    tls_verify verify = tls_verify::none;
    std::string ca_file;  // PEM; empty = the system's default verify paths
};

// One SSL_CTX. Lifecycle: server() or client() on the owning shard's thread; sessions made
// from it must end before it does.
class tls_context {
public:
    // `keys` (may be null: OpenSSL picks random ones) are copied.
    [[nodiscard]] static std::expected<tls_context, tls_error> server(const tls_credentials& credentials,
                                                                      const tls_ticket_keys* keys = nullptr);
    [[nodiscard]] static std::expected<tls_context, tls_error> client(const tls_client_options& options = {});
    tls_context(tls_context&& other) noexcept;
    tls_context& operator=(tls_context&& other) noexcept;
    tls_context(const tls_context&) = delete;
    tls_context& operator=(const tls_context&) = delete;
    ~tls_context();

    [[nodiscard]] tls_role role() const noexcept { return _role; }
    [[nodiscard]] SSL_CTX* native() const noexcept { return _ctx; }
    // Replaces OpenSSL's default cipher lists: `tls12` in OpenSSL cipher-list syntax (TLS 1.2),
    // `tls13` a colon-separated list of TLS 1.3 suites; an empty string keeps that default.
    // An error names the list OpenSSL refused.
    [[nodiscard]] std::expected<void, tls_error> set_ciphers(const std::string& tls12, const std::string& tls13);

private:
    tls_context(SSL_CTX* ctx, tls_role role) noexcept : _ctx(ctx), _role(role) {}
    SSL_CTX* _ctx = nullptr;  // owned
    tls_role _role = tls_role::server;
};

// A client's resumable session (a TLS 1.3 ticket or a TLS 1.2 session) kept for the next
// connection to the same server. Move-only; frees its SSL_SESSION.
class tls_saved_session {
public:
    tls_saved_session() = default;
    explicit tls_saved_session(ssl_session_st* adopted) noexcept : _session(adopted) {}
    tls_saved_session(tls_saved_session&& other) noexcept : _session(other._session) { other._session = nullptr; }
    tls_saved_session& operator=(tls_saved_session&& other) noexcept;
    tls_saved_session(const tls_saved_session&) = delete;
    tls_saved_session& operator=(const tls_saved_session&) = delete;
    ~tls_saved_session();
    // True when a handshake may resume from it.
    [[nodiscard]] bool resumable() const noexcept;
    [[nodiscard]] ssl_session_st* native() const noexcept { return _session; }

private:
    ssl_session_st* _session = nullptr;  // owned (an SSL_SESSION)
};

enum class tls_state : std::uint8_t {
    handshaking,
    established,
    closed,  // the peer sent close_notify
    failed,  // see error()
};

// One TLS connection's engine. Lifecycle: create() -> feed_ciphertext()/encrypt()* ->
// destroyed. Owned by one connection on one shard. Bytes given to it are copied into its
// read BIO during the call; bytes it produces are appended to caller-owned strings.
//
// Output order: every record the engine produces (handshake messages, session tickets,
// alerts, application data) leaves through one queue in the order TLS requires; encrypt()
// and take_output() both drain it.
class tls_session {
public:
    // A server session waits for a ClientHello. A client session has its ClientHello ready
    // in take_output() at once; `server_name` (SNI, RFC 6066 §3) may be empty, and is also
    // the name verified when the context verifies peers. An IP literal is not sent as SNI and
    // is verified against the certificate's IP addresses (subjectAltName iPAddress). A client given `resume` offers that
    // session (RFC 8446 §2.2).
    [[nodiscard]] static std::expected<tls_session, tls_error> create(const tls_context& context,
                                                                      std::string_view server_name = {},
                                                                      const tls_saved_session* resume = nullptr);
    // kTLS: a server session that runs its handshake on the connected socket `fd` itself
    // (non-blocking reads and writes by OpenSSL; the caller waits for readiness with io_uring
    // POLL_ADD, so the shard still never blocks) with SSL_OP_ENABLE_KTLS, so that OpenSSL hands
    // the record layer to the kernel (TCP_ULP "tls", TLS_TX/TLS_RX) as soon as the keys are
    // known. Afterwards the socket carries plaintext: sends and receives are plain io_uring
    // operations again, and feed_ciphertext()/encrypt() are not used. Ciphers are limited to
    // AES-GCM (ECDHE key exchange for TLS 1.2), which every kTLS kernel implements; clients
    // with nothing else fail the handshake. OpenSSL offloads TLS 1.3 receive only from 3.2 on
    // (3.0 offloads TLS 1.3 send and TLS 1.2 both ways), which the start-up probe finds out.
    // The fd stays the caller's.
    [[nodiscard]] static std::expected<tls_session, tls_error> create_on_socket(const tls_context& context, int fd);
    enum class socket_step : std::uint8_t { want_read, want_write, done };
    // Socket sessions: advances the handshake; `done` once established.
    [[nodiscard]] std::expected<socket_step, tls_error> handshake_on_socket();
    // Socket sessions, once established: whether the kernel encrypts what is sent / decrypts
    // what is received.
    [[nodiscard]] bool kernel_sends() const noexcept;
    [[nodiscard]] bool kernel_receives() const noexcept;
    [[nodiscard]] bool on_socket() const noexcept { return _ssl != nullptr && _network_in == nullptr; }

    tls_session(tls_session&& other) noexcept;
    tls_session& operator=(tls_session&& other) noexcept;
    tls_session(const tls_session&) = delete;
    tls_session& operator=(const tls_session&) = delete;
    ~tls_session();

    // Takes ciphertext from the network and advances the handshake; once established,
    // appends the decrypted application data to `plaintext`. Afterwards take_output() may
    // hold records to send (the handshake's answer, tickets, an alert). On failure the state
    // is `failed`, error() says why, and take_output() may hold the alert to send before
    // closing. Bytes after a close_notify are ignored.
    [[nodiscard]] std::expected<void, tls_error> feed_ciphertext(std::string_view in, std::string& plaintext);
    // Encrypts `plaintext` (only once established) and appends all pending records to
    // `ciphertext`.
    [[nodiscard]] std::expected<void, tls_error> encrypt(std::string_view plaintext, std::string& ciphertext);
    // Appends the records waiting to be sent to `ciphertext`.
    void take_output(std::string& ciphertext);
    [[nodiscard]] bool has_output() const noexcept;
    // Appends a close_notify alert (RFC 8446 §6.1) when established; idempotent. A socket
    // session writes it to the socket (through the kernel's record layer) instead.
    void close(std::string& ciphertext);

    [[nodiscard]] tls_state state() const noexcept { return _state; }
    [[nodiscard]] bool is_established() const noexcept { return _state == tls_state::established; }
    [[nodiscard]] const tls_error& error() const noexcept { return _error; }
    // After the handshake: "TLSv1.3"; the cipher "TLS_AES_256_GCM_SHA384"; its secret and
    // algorithm bits (256/256); whether the session was resumed. Views are static strings.
    [[nodiscard]] std::string_view protocol_name() const noexcept;
    [[nodiscard]] std::string_view cipher_name() const noexcept;
    [[nodiscard]] int cipher_bits() const noexcept;
    [[nodiscard]] int cipher_algorithm_bits() const noexcept;
    [[nodiscard]] bool session_reused() const noexcept;
    // Client side: the session to offer on the next connection (TLS 1.3 tickets arrive after
    // the handshake, with the first data the server sends).
    [[nodiscard]] tls_saved_session saved_session() const noexcept;
    // The peer's certificate subject CN (client side: the server's), or "".
    [[nodiscard]] std::string peer_common_name() const;
    // The OpenSSL object, for what this interface does not wrap (client session reuse,
    // tests). Owned by the session.
    [[nodiscard]] SSL* native() const noexcept { return _ssl; }

private:
    tls_session() = default;
    void release() noexcept;
    [[nodiscard]] std::expected<void, tls_error> fail(tls_errc code, std::string_view what);
    SSL* _ssl = nullptr;      // owned; owns both BIOs
    BIO* _network_in = nullptr;   // ciphertext from the peer (read BIO of _ssl)
    BIO* _network_out = nullptr;  // ciphertext for the peer (write BIO of _ssl)
    tls_state _state = tls_state::handshaking;
    bool _close_sent = false;
    tls_error _error;
};

// Whether the kernel can take the record layer (kTLS: TCP_ULP "tls", CONFIG_TLS, Linux 4.13+
// for TX, 4.17+ for RX), tested on a connected loopback TCP socket pair.
struct ktls_probe {
    bool available = false;
    bool openssl_support = false;  // OpenSSL built with kTLS (no OPENSSL_NO_KTLS)
    std::string detail;            // the one-line start-up message
};
[[nodiscard]] ktls_probe probe_ktls() noexcept;

// Whether a real handshake over loopback with `credentials` (server side on a socket session,
// client side OpenSSL's own) ends with the kernel holding the server's record layer both
// ways. Run at start-up only when probe_ktls() found the ULP: the ULP alone does not tell
// whether this kernel and this OpenSSL agree on TLS 1.3 receive offload. `detail` is one line.
struct ktls_handshake_probe {
    bool sends = false;
    bool receives = false;
    std::string detail;
};
[[nodiscard]] ktls_handshake_probe probe_ktls_handshake(const tls_credentials& credentials) noexcept;

// What a server does with inbound TLS given the probe (probe_ktls), whether kTLS is enabled
// (--no-ktls), and its certificate: the kernel takes the record layer only when the handshake
// probe found it takes both directions. `detail` is the start-up line. Implemented with the
// probes in core/ktls.cc.
struct ktls_decision {
    bool kernel = false;
    std::string detail;
};
[[nodiscard]] ktls_decision decide_ktls(const ktls_probe& probe, bool enabled,
                                        const tls_credentials& credentials) noexcept;

}  // namespace ringrelay::core
