// protocol/server_session.h: the SMTP server side as a pure state machine (RFC 5321, with
// RFC 1870 SIZE, RFC 2920 PIPELINING, RFC 3030 CHUNKING, RFC 6152 8BITMIME, RFC 6531
// SMTPUTF8, RFC 2034 ENHANCEDSTATUSCODES, RFC 3207 STARTTLS). Bytes in, reply bytes out; no
// sockets, clocks, files, threads or cryptography. The shard wiring (queue/) owns one per
// connection and drives it.
// SECURITY: every byte given to feed() comes from the network.
//
// Lifecycle: construct -> start() (banner) -> feed()* -> closed(). When feed() stops because
// a message is complete (message_ready()), the host stores message() durably and then calls
// commit_done(); only then does the session say 250 and accept more input.
// STARTTLS: when feed() stops because the session accepted STARTTLS (tls_requested()), the
// host sends the 220 in plaintext, discards every byte it has not fed yet (RFC 3207 §4.2; the
// CVE-2011-0411 injection), runs the TLS handshake, and calls on_tls_established(); from
// then on it feeds decrypted bytes. If the handshake fails the host closes the connection.
// Implicit TLS (RFC 8314): the host runs the handshake first, calls on_tls_established(),
// then start().
// AUTH (RFC 4954, PLAIN and LOGIN): the session runs the SASL exchange (334 challenges) and,
// once a client has sent complete credentials, stops (auth_pending()) like for a message: the
// host checks them away from the shard's hot path (the KDF is deliberately slow) and calls
// auth_done(); only then does the session reply and read on. Everything the
// session returns by reference or view is owned by the session and valid until the next
// call that mutates it (feed, commit_done, on_timeout, on_shutdown).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/command_parser.h"
#include "protocol/data_reader.h"
#include "protocol/reply.h"
#include "protocol/sasl.h"

namespace ringrelay::protocol {

enum class relay_trust : std::uint8_t {
    untrusted,  // may only send to relay_domains
    trusted,    // client in --relay-networks: may relay anywhere
};

// RFC 2920 §3.1 synchronisation points (see server_session.cc: synchronisation_point).
enum class pipelining_sync : std::uint8_t {
    enforce,  // a command pipelined past one ends the session with 554 5.5.0 (the default)
    off,      // replies depend only on the bytes, not on how they were split into reads
};

// Whether the host can run TLS on this connection's listener (RFC 3207).
enum class tls_offer : std::uint8_t {
    none,      // STARTTLS is not advertised and answers 502 5.5.1
    starttls,  // EHLO advertises STARTTLS until TLS is active
};

// Whether the session offers SMTP AUTH (RFC 4954).
enum class auth_offer : std::uint8_t {
    none,       // not advertised; AUTH answers 503 5.5.1
    under_tls,  // advertised and accepted only once TLS is active (538 5.7.11 before)
    always,     // also in plaintext (--auth-plaintext: behind a TLS-terminating proxy)
};

// Fixed after construction; shared read-only by every session of a shard.
struct server_config {
    std::string hostname = "localhost";
    std::uint64_t max_message_size = 26214400;  // advertised in SIZE; 0 = no limit
    std::uint32_t max_recipients = 1000;
    std::uint32_t max_errors = 20;              // then 421 4.7.0 and close
    std::vector<std::string> relay_domains;     // lower-case; "example.org" or ".example.org" (subdomains)
    pipelining_sync sync = pipelining_sync::enforce;
    tls_offer tls = tls_offer::none;
    auth_offer auth = auth_offer::none;
    std::uint32_t max_auth_failures = 3;        // failed AUTH attempts, then 421 4.7.0 and close
    // Where "<postmaster>" and "<postmaster@hostname>" go (RFC 5321 §4.5.1: a server MUST take
    // them, from anyone): the envelope recipient becomes this mailbox ("local@domain"), which
    // is routed like any other recipient. Empty: no postmaster here, "<postmaster>" is refused
    // with 550 5.1.1 and "<postmaster@hostname>" is subject to relay control like any address.
    std::string postmaster;
};

// What the host's TLS engine negotiated, for the Received: header. The views are read only
// during on_tls_established().
struct tls_info {
    std::string_view protocol;  // "TLSv1.3"
    std::string_view cipher;    // "TLS_AES_256_GCM_SHA384"
    int cipher_bits = 0;        // secret bits
    int algorithm_bits = 0;     // bits of the algorithm
};

struct client_info {
    std::string address;   // peer IP as text, "127.0.0.1" or "::1"
    relay_trust trust = relay_trust::untrusted;
    // The load balancer's address when `address` came from its PROXY protocol header (issue
    // 19; queue/proxy_stage.h); empty for a direct connection.
    std::string proxy = {};
};

// A reply the host chooses instead of the session's own: a 4xx or 5xx row of reply.h and
// the text for the row's argument slot (empty for rows without one). The argument's bytes
// are owned by whoever made the value and are read only during the call it is given to.
struct host_reply {
    reply_id reply = reply_id::none;  // none: no refusal, go on
    std::string_view argument;
};

struct envelope;

// Services the session needs from its host; injected so the session stays pure.
class session_host {
public:
    virtual ~session_host() = default;
    // A fresh, unique queue id for the message whose DATA/BDAT starts now.
    virtual std::uint64_t next_queue_id() noexcept = 0;
    // The current date in RFC 5322 form, "Sat, 28 Nov 2026 03:35:26 +0000", for Received:.
    virtual std::string_view rfc5322_date() noexcept = 0;
    // Asked for each MAIL command that is otherwise acceptable. A reply other than none is
    // sent instead of 250 (not counted towards max_errors: the client did nothing wrong) and
    // no transaction begins. The relay answers 452 4.3.1 while its spool cannot take a
    // message (disk nearly full or failing; RFC 5321 §4.5.3.1.9 style, Postfix's
    // queue_minfree); ringrelay-sink answers 451 4.7.1 above a client's message rate.
    // `client` is the session's own; the returned argument may point into it.
    virtual host_reply check_mail(const client_info& client) noexcept {
        (void)client;
        return {};
    }
    // Asked for each AUTH command that is otherwise acceptable, before any challenge. A reply
    // other than none (the relay: 421 4.7.0 auth_throttled while the client's address has
    // failed too often) is sent instead, and a 421 closes the session.
    virtual host_reply check_auth(const client_info& client) noexcept {
        (void)client;
        return {};
    }
    // Asked for each RCPT that is otherwise acceptable (syntax, limits and relay control
    // passed; never for the postmaster, RFC 5321 §4.5.1). `transaction` holds the MAIL so far
    // (mail_from, auth_user) and the recipients accepted before this one; `recipient` is the
    // mailbox (no angle brackets). A reply other than none is sent instead of 250 (not
    // counted towards max_errors) and the recipient is not added. The relay refuses a
    // recipient on the sender's suppression list (550 5.1.1 recipient_suppressed, the
    // argument made by the host). The views are read only during the call.
    virtual host_reply check_rcpt(const client_info& client, const envelope& transaction,
                                  std::string_view recipient) noexcept {
        (void)client;
        (void)transaction;
        (void)recipient;
        return {};
    }
};

enum class body_type : std::uint8_t { seven_bit, eight_bit_mime };

// The envelope of the message being received (RFC 5321 §2.3.1).
struct envelope {
    std::uint64_t queue_id = 0;
    std::string helo;                 // the EHLO/HELO argument
    std::string mail_from;            // without angle brackets; empty for the null sender
    std::vector<std::string> rcpt_to; // without angle brackets, source routes removed
    body_type body = body_type::seven_bit;
    bool smtputf8 = false;
    // The AUTH identity (RFC 4954) of the session when MAIL was given; empty if the client
    // had not authenticated. Stored with the message (queue/record.h): the sender's tenant.
    std::string auth_user;
};

// Complete AUTH credentials, for the host to check (auth_pending()). Views into the session,
// valid until auth_done().
struct auth_attempt {
    std::string_view mechanism;  // "PLAIN" or "LOGIN"
    std::string_view authzid;    // PLAIN's authorization identity; empty = the user itself
    std::string_view user;
    std::string_view password;
    bool well_formed = true;     // false: the response decoded to no valid credentials (a failure)
};

enum class auth_result : std::uint8_t {
    ok,                 // 235 2.7.0
    failed,             // 535 5.7.8 (counted; at max_auth_failures 421 4.7.0 and close)
    temporary_failure,  // 454 4.7.0 (e.g. the users file has an unusable hash)
    throttled,          // 421 4.7.0 auth_throttled and close (the address failed too often)
};

enum class commit_result : std::uint8_t {
    ok,          // 250 2.0.0 Ok: queued as ID
    no_space,    // 452 4.3.1 Insufficient system storage
    io_error,    // 451 4.3.0 Error: queue file write error
};

// A message with more Received: fields than this is refused as a mail loop (RFC 5321 §6.3;
// Postfix's hopcount_limit has the same default).
inline constexpr std::size_t max_received_headers = 50;

// Queue ids are printed as 16 upper-case hex digits.
std::string format_queue_id(std::uint64_t id);

// Sees what message() will hold as it grows: begun() when a message's storage starts (the
// Received: header we prepend is then its first octets), appended() with each piece of data
// stored after it (dot-stuffing removed). The views are valid only during the call. Called on
// the session's thread from feed(); an observer must not call back into the session.
class body_observer {
public:
    virtual void body_begun() noexcept = 0;
    virtual void body_appended(std::string_view octets) noexcept = 0;

protected:
    ~body_observer() = default;
};

class server_session {
public:
    server_session(const server_config& config, client_info client, session_host& host);
    server_session(const server_session&) = delete;
    server_session& operator=(const server_session&) = delete;
    ~server_session();  // wipes AUTH secrets still held

    // Appends the 220 banner to `out`.
    void start(std::string& out);

    // Consumes bytes of `in` (owned by the caller, only read during the call); appends the
    // replies, in order, to `out`. Returns how many bytes it consumed: all of them unless it
    // stopped because a message became ready (message_ready()), the session closed, or it
    // accepted STARTTLS (tls_requested(); it then consumes nothing until
    // on_tls_established()).
    // An incomplete trailing command line is copied inside and counts as consumed.
    std::size_t feed(std::string_view in, std::string& out);

    // True between the end of a message's data and commit_done().
    [[nodiscard]] bool message_ready() const noexcept;
    [[nodiscard]] const envelope& message_envelope() const noexcept;
    // The message as it must be stored and relayed: the Received: header we prepend, then
    // the data with dot-stuffing removed, lines ending in CRLF, without the final ".".
    [[nodiscard]] std::string_view message() const noexcept;

    // Optional: sees the message's octets as they are stored, for work that must follow the
    // bytes as they arrive (the relay's DKIM body hash). Null: none. Not owned.
    void set_body_observer(body_observer* observer) noexcept { _observer = observer; }

    // The host reports whether message() reached stable storage; appends the reply.
    void commit_done(commit_result result, std::string& out);
    // The host refuses the message with a reply of its own choosing (`refusal.reply` must be
    // a 4xx or 5xx row, or reply_id::host_text with the whole line as argument; ringrelay-sink's
    // injected deferrals and rejections); appends it and ends the transaction; a 421 also
    // closes the session. Not counted towards max_errors.
    void commit_done(host_reply refusal, std::string& out);

    // STARTTLS was accepted (the 220 is in `out`): the host must start TLS now and give the
    // session no byte it received before the handshake.
    [[nodiscard]] bool tls_requested() const noexcept;
    // The handshake completed (after STARTTLS, or before start() on an implicit-TLS port).
    // The session is reset to its state right after the banner: no greeting, no transaction,
    // no buffered input (RFC 3207 §4.2: a fresh EHLO is required); EHLO no longer offers
    // STARTTLS, a second STARTTLS gets 503 5.5.1, and Received: says ESMTPS and records
    // `info`.
    void on_tls_established(const tls_info& info);
    [[nodiscard]] bool tls_active() const noexcept;

    // AUTH: complete credentials await the host's check (auth_attempt()); feed() consumes
    // nothing until auth_done(), which appends the reply. A pipelined command behind an AUTH
    // with an initial response (RFC 4954 §4 allows it) waits in the host's buffer meanwhile.
    [[nodiscard]] bool auth_pending() const noexcept;
    [[nodiscard]] auth_attempt pending_auth() const noexcept;
    void auth_done(auth_result result, std::string& out);
    // Failed AUTH attempts answered so far (the host's failure delay grows with it).
    [[nodiscard]] std::uint32_t auth_failures() const noexcept { return _auth_failures; }
    // The authenticated user; empty before (and after STARTTLS resets the session).
    [[nodiscard]] std::string_view authenticated_user() const noexcept;

    // The host's deadline for the next command (or data) expired: 421 4.4.2, closed.
    void on_timeout(std::string& out);
    // The server is shutting down: 421 4.3.2 and closed. The host calls this only when the
    // session is not inside a transaction (!in_transaction()) or the grace period is over.
    void on_shutdown(std::string& out);

    // The session has said its last word (221 or 421); the host closes after sending `out`.
    [[nodiscard]] bool closed() const noexcept;
    // Between MAIL and the end of the transaction (message committed, RSET, or failure).
    [[nodiscard]] bool in_transaction() const noexcept;
    // Reading message content (DATA body or BDAT chunk octets), where input makes progress
    // without replies.
    [[nodiscard]] bool receiving_content() const noexcept;
    // Frees buffers an idle session does not need (called by the host when input is idle).
    void shrink() noexcept;

private:
    const server_config& _config;
    client_info _client;
    session_host& _host;
    // Implementation members (state, line buffer, body, counters) follow; they belong to
    // server_session.cc and may change freely.
    enum class input_mode : std::uint8_t {
        command,       // reading command lines
        discard_line,  // a command line went past max_command_line: skip to its LF
        data,          // DATA body, until CRLF "." CRLF
        chunk,         // BDAT chunk octets, _chunk_remaining of them
    };
    enum class greeting : std::uint8_t { none, helo, ehlo };
    enum class transaction : std::uint8_t { none, mail, rcpt };  // rcpt: >= 1 accepted
    enum class body_mode : std::uint8_t { none, data, bdat };

    std::size_t feed_command(std::string_view in, std::string& out);
    std::size_t feed_chunk(std::string_view in, std::string& out);
    enum class pipelined : std::uint8_t { no, yes };  // more input followed the line
    void handle_line(std::string_view line, pipelined after, std::string& out);
    void handle_command(const command& cmd, std::string& out);
    void on_helo(const command& cmd, std::string& out);
    void on_mail(const command& cmd, std::string& out);
    void on_rcpt(const command& cmd, std::string& out);
    void on_data(std::string& out);
    void on_bdat(const command& cmd, std::string& out);
    void on_starttls(std::string& out);
    void on_auth(const command& cmd, pipelined after, std::string& out);
    void on_auth_response(std::string_view line, std::string& out);
    void auth_plain_response(std::string_view response, std::string& out);
    void auth_login_response(std::string_view response, std::string& out);
    // A response that did not decode: ends the exchange with its reply, or (bad_message)
    // makes it a failed attempt for the host.
    void sasl_failed(sasl_error error, std::string& out);
    void end_auth() noexcept;
    [[nodiscard]] bool auth_offered() const noexcept;
    void begin_body(body_mode mode);
    void finish_chunk(std::string& out);
    void finish_message(std::string& out);
    void end_transaction();
    // Appends a reply; a counted error may add 421 4.7.0 and close (max_errors).
    void say(std::string& out, reply_id id, std::string_view argument = {});
    void say_uncounted(std::string& out, reply_id id, std::string_view argument = {});

    // Shard-local, reused across transactions so the per-command path does not allocate.
    envelope _envelope;
    std::vector<std::string> _spare_rcpts;  // strings of finished transactions, for reuse
    std::string _line;                      // a command line straddling feed() calls
    std::string _body;                      // Received: header + data of the current message
    std::string _tls_description;           // "TLSv1.3 with cipher ... (256/256 bits)"; empty: no TLS
    data_reader _reader;
    body_observer* _observer = nullptr;     // not owned
    std::uint64_t _chunk_size = 0;          // of the BDAT chunk being read
    std::uint64_t _chunk_remaining = 0;
    std::uint32_t _errors = 0;
    std::uint32_t _rcpt_overshoot = 0;      // 452 too-many replies not yet counted as errors
    input_mode _mode = input_mode::command;
    greeting _greeting = greeting::none;
    transaction _transaction = transaction::none;
    body_mode _body_mode = body_mode::none;
    reply_id _chunk_error = reply_id::none;  // the current chunk is discarded, then this reply
    reply_id _bdat_failure = reply_id::none; // a failed BDAT transaction: repeated until LAST
    bdat_end _chunk_end = bdat_end::more;
    bool _message_ready = false;
    bool _closed = false;
    bool _tls_requested = false;  // STARTTLS accepted, handshake not yet reported
    // AUTH exchange (RFC 4954): which response the next line is, then the host's check.
    enum class auth_step : std::uint8_t { none, plain, login_user, login_password, pending };
    auth_step _auth_step = auth_step::none;
    std::string _auth_mechanism;  // of the exchange in progress
    std::string _auth_authzid;
    std::string _auth_user;       // the user of the exchange; kept once authenticated
    std::string _auth_password;   // wiped as soon as the host has answered
    bool _authenticated = false;
    bool _auth_well_formed = true;
    std::uint32_t _auth_failures = 0;
};

}  // namespace ringrelay::protocol
