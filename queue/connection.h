// queue/connection.h: the relay's inbound connection: the inbound SMTP engine
// (queue/server_connection.h: stream, session, STARTTLS and implicit TLS, kTLS, early talker,
// held input, deadlines) with the relay's commit and AUTH. A finished message is appended to
// the shard's spool (group commit); only when the fdatasync covering it completed
// (committed(ok)) is the Reception line logged, the message handed to the shard's delivery,
// and 250 said; a failed write or sync answers 452 4.3.1 / 451 4.3.0.
// AUTH: a complete attempt goes to the relay's work pool as an auth_check (the KDF never runs
// on the shard thread); input waits in the engine meanwhile. An attempt that finds no room
// (its address's checks in flight, its user paced, the pool's queue full) waits in the
// shard's auth_wait_queue (the connection is the node) until room appears, or 454 4.7.0 when
// the queue is full or the wait too long; closing leaves the queue. A failure is answered
// after a delay growing with the connection's failures (an io_uring timeout, nothing blocks),
// and counts against the client's address (auth_failures) and user name (user_failures).
// DKIM (queue/dkim_signer.h): with --dkim-key the connection watches the message arrive
// (protocol::body_observer) and hashes its body meanwhile; at the end of data the signatures
// are made on the signer's pool, and the signed message is what goes to the spool.
// Campaigns (issue 17; queue/campaign_header.h): when the shaping rules name a campaign header,
// its value is read at the end of data and every field of that name is left out of the message
// before it is signed and stored (a copy, only for a message that has one); the campaign is
// stored with the record (queue/record.h version 3) and given to the delivery.
//
// Lifecycle: created by the shard on accept -> start() -> ... -> retired by the shard at the
// end of the turn once nothing is pending (server_connection). Owned by its shard;
// shard-local.
#pragma once
#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "protocol/server_session.h"
#include "protocol/dkim_canon.h"
#include "queue/auth.h"
#include "queue/dkim_signer.h"
#include "queue/server_connection.h"
#include "queue/spool.h"

namespace ringrelay::queue {

class shard;

class connection final : public server_connection,
                         public commit_waiter,
                         public auth_waiter,
                         public protocol::body_observer {
public:
    // client: its address (a PROXY header's, with the balancer's), trust.
    connection(shard& owner, int fd, protocol::client_info client, listener_kind kind);
    ~connection() override;

    // commit_waiter (the spool): the message's record is durable, or failed.
    void committed(protocol::commit_result result) noexcept override;
    // auth_waiter (the shard's auth_wait_queue)
    outcome retry_auth(std::int64_t now_ms) noexcept override;
    void auth_wait_over(std::int64_t waited_ms) noexcept override;
    void auth_wait_cancelled() noexcept override;
    // body_observer (the session): the message as it is stored, for the DKIM body hash.
    void body_begun() noexcept override;
    void body_appended(std::string_view octets) noexcept override;

private:
    // server_connection
    void begin_commit() noexcept override;
    void begin_auth() noexcept override;
    void on_closing() noexcept override;

    void log_reception() noexcept;
    // The message (signed or not) goes to the spool.
    void append_to_spool() noexcept;
    // The campaign of the message (its header read, the copy without it made); false if the
    // message was answered instead (no memory).
    [[nodiscard]] bool take_campaign() noexcept;
    // The one-click unsubscribe fields put on top of the message (queue/unsubscribe.h); false
    // if the message was answered instead (no memory).
    [[nodiscard]] bool add_unsubscribe() noexcept;
    // The message is answered 451 4.3.0 for want of memory for its copy.
    void refuse_for_memory() noexcept;
    // The message as it is signed: the copy without the campaign header, or the session's.
    [[nodiscard]] std::string_view unsigned_message() const noexcept;
    static void dkim_signed(void* self, dkim_job& job) noexcept;
    // The stored message: the signed copy, or the session's.
    [[nodiscard]] std::string_view stored_message() const noexcept;
    // Why a prepared check did or did not start.
    enum class auth_start : std::uint8_t { started, answered, address_busy, user_paced, pool_full, behind_others };
    // Admission (address, then user), then the work pool; answers a blocked address itself.
    auth_start try_start_auth(std::int64_t now_ms) noexcept;
    // An attempt that waited and will not be checked: wipes the copy, answers 454 4.7.0.
    void refuse_auth_for_load() noexcept;
    static void auth_checked(void* self, auth_check& check) noexcept;

    shard& _shard;
    std::uint64_t _received_us = 0;
    std::unique_ptr<auth_check> _auth_check;  // made at the first AUTH attempt
    std::size_t _auth_slot = 0;        // the client's slot in auth_failures
    std::size_t _auth_user_slot = 0;   // the attempt's user name's slot in user_failures
    bool _auth_malformed = false;      // the attempt fails without a check (no user counted)
    // DKIM: the table taken when the message began (a reload mid-message does not change it),
    // the body hash over the bytes as they arrived, the job, and the signed copy of the message
    // (the signature fields, then the message) while it is committed.
    std::shared_ptr<const dkim_keys> _dkim_table;
    std::optional<protocol::dkim::body_hash_stream> _body_hash;
    std::unique_ptr<dkim_job> _dkim_job;
    std::string _signed;
    bool _signed_used = false;         // _signed holds the stored message
    std::vector<std::string> _dkim_made;    // for the Reception record: "d=... s=... a=..."
    std::vector<std::string> _dkim_errors;  // why a key did not sign
    // The message's campaign ("" for none) and the message without its campaign header, while it
    // is committed.
    std::string _campaign;
    std::string _stripped;
    bool _stripped_used = false;  // _stripped holds the unsigned message
};

}  // namespace ringrelay::queue
