// queue/acceptance.h: how the relay takes responsibility for one message, whoever brought it:
// SMTP (queue/connection.h, at the end of DATA/BDAT) or HTTP (queue/injector.h, POST
// /api/v1/inject). In order: the campaign header read and stripped (issue 17;
// queue/campaign_header.h), the DKIM signatures (queue/dkim_signer.h: on the signer's pool, or
// here for Ed25519 only), the spool append (group commit); then, only once the fdatasync that
// covers the record completed, the Reception log record, the hand-off to the shard's delivery,
// and the owner told (SMTP says 250, HTTP 200). A failed write or sync, no memory, or a full
// signing queue: the owner is told so and nothing was accepted.
//
// The DKIM body hash is made as the message arrives (body_begun/body_appended: SMTP's
// body_observer), or over the whole message just before begin() (HTTP).
//
// Lifecycle: one per connection or injection, reused message after message; begin() -> (the
// signer's pool) -> spool -> committed() -> owner.acceptance_done(). The envelope, the message and
// the source given to begin() stay unchanged until then. acceptance_done() is its last act on
// the object: the owner may destroy it there.
// Threading: the shard's thread (the signing runs on the pool, handed back through the shard's
// work_return).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/dkim_canon.h"
#include "protocol/server_session.h"
#include "queue/dkim_signer.h"
#include "queue/spool.h"

namespace ringrelay::queue {

class shard;

// Where a message came from, as the Reception record says it. Views owned by the owner, valid
// until acceptance_done().
struct reception_source {
    std::string_view client;     // the peer's address
    std::string_view proxy;      // the load balancer's address (issue 19); empty: none
    std::string_view protocol;   // "SMTP" or "HTTP"
    std::string_view auth_user;  // empty: none
    std::string_view tls;        // empty: none
};

enum class acceptance_result : std::uint8_t {
    committed,  // durable: SMTP's 250
    no_space,   // the spool's write or sync failed for room (452 4.3.1)
    io_error,   // another write or sync failure (451 4.3.0)
    deferred,   // not stored: no memory, or the signing queue is full (451 4.3.0)
};

class acceptance_owner {
public:
    virtual void acceptance_done(acceptance_result result) noexcept = 0;

protected:
    ~acceptance_owner() = default;
};

class message_acceptance final : public commit_waiter {
public:
    message_acceptance(shard& owner, acceptance_owner& told) noexcept;
    ~message_acceptance();
    message_acceptance(const message_acceptance&) = delete;
    message_acceptance& operator=(const message_acceptance&) = delete;

    // The message's storage starts: the keys in force are taken, and its body hashed as it
    // arrives (nothing without --dkim-key).
    void body_begun() noexcept;
    void body_appended(std::string_view octets) noexcept;
    // Takes `message` (the whole message as stored: trace fields first) for `env`. The owner
    // hears acceptance_done(), maybe from inside this call (deferred).
    void begin(const protocol::envelope& env, std::string_view message, const reception_source& from) noexcept;

    // commit_waiter (the spool)
    void committed(protocol::commit_result result) noexcept override;

private:
    // The message stored (signed, without its campaign header), until the commit is answered.
    [[nodiscard]] std::string_view stored_message() const noexcept;
    // The campaign of the message (its header read, the copy without it made); false if the
    // owner was told (no memory).
    [[nodiscard]] bool take_campaign() noexcept;
    // The one-click unsubscribe fields put on top of the message (queue/unsubscribe.h); false if
    // the owner was told (no memory).
    [[nodiscard]] bool add_unsubscribe() noexcept;
    // The owner is told 451 4.3.0 / 503 for want of memory for a copy.
    void refuse_for_memory() noexcept;
    // The message as it is signed: the copy without the campaign header, or the given one.
    [[nodiscard]] std::string_view unsigned_message() const noexcept;
    static void dkim_signed(void* self, dkim_job& job) noexcept;
    void append_to_spool() noexcept;
    void log_reception() noexcept;

    shard& _shard;
    acceptance_owner& _owner;
    // The message being accepted (begin() to acceptance_done()).
    const protocol::envelope* _env = nullptr;
    std::string_view _message;
    reception_source _from;
    std::uint64_t _received_us = 0;
    // DKIM: the table taken when the message began (a reload mid-message does not change it),
    // the body hash over the bytes as they arrived, the job, and the signed copy of the message
    // (the signature fields, then the message) while it is committed.
    std::shared_ptr<const dkim_keys> _dkim_table;
    std::optional<protocol::dkim::body_hash_stream> _body_hash;
    std::unique_ptr<dkim_job> _dkim_job;
    std::string _signed;
    bool _signed_used = false;              // _signed holds the stored message
    std::vector<std::string> _dkim_made;    // for the Reception record: "d=... s=... a=..."
    std::vector<std::string> _dkim_errors;  // why a key did not sign
    // The message's campaign ("" for none) and the message without its campaign header, while it
    // is committed.
    std::string _campaign;
    std::string _stripped;
    bool _stripped_used = false;  // _stripped holds the unsigned message
};

}  // namespace ringrelay::queue
