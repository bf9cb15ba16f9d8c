// queue/delivery_job.h: the vocabulary the parts of delivery share (docs/ARCHITECTURE.md
// "Delivery"): a job (one message's recipients for one next hop), where it goes (route_key),
// the next hop as the log and DSNs name it, and what crosses between shards.
//
// Ownership: a job is made and freed by its message's (origin) shard; while it is on the
// owner shard (queue/destination_pool.h) it only reads the message's envelope and body
// through `message` and `outbound`, which do not change while the message has jobs out.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.h"
#include "core/net.h"
#include "protocol/client_types.h"
#include "queue/admin_request.h"
#include "queue/record.h"
#include "queue/shaping_rules.h"

namespace ringrelay::queue {

struct stored_message;
struct egress_source;
struct egress_pool;
struct automation_rule;

// A message's bytes in memory: kept by the body cache after reception, or read back from the
// spool for an attempt (queue/message_store.h). Shared: a job keeps the body it sends alive
// even if the cache lets it go meanwhile.
struct message_body {
    std::string bytes;      // what was read (the whole record) or copied
    std::string_view text;  // the message itself, inside bytes
};
using body_ptr = std::shared_ptr<const message_body>;

// The next hop as the log and DSNs name it.
struct next_hop_ref {
    std::string name;     // MX host name, or the static route's ADDR:PORT; "" if none was reached
    std::string address;  // "ADDR:PORT" connected to
    std::string tls;      // "TLSv1.3 TLS_AES_256_GCM_SHA384" if the attempt ran under TLS, else ""
    std::string site;     // the site (queue/site_name.h) the attempt was for; "" if none was known
    // The egress source's name (queue/egress.h), set by the origin from its job; "" = the
    // system-chosen address ("default" in the log). Views the relay's egress table, which
    // outlives every shard.
    std::string_view egress_source = {};
};

// Where a job goes: a destination key and what is needed to build the destination on the
// shard that owns it (queue/router.h).
struct route_key {
    std::string key;  // "mx:<domain>" or "<ADDR:PORT>" of a static route (+ "|tls=<policy>")
    std::string name;
    bool by_mx = false;
    core::endpoint hop;  // static routes
    core::config::tls_policy tls = core::config::tls_policy::opportunistic;  // the domain's
};

// One message's recipients for one destination.
struct delivery_job {
    stored_message* message = nullptr;  // the origin shard's
    unsigned origin_shard = 0;
    route_key route;
    std::vector<std::uint32_t> rcpt_index;
    std::vector<std::string> rcpt_to;  // the addresses, for the client session's span
    // What the connection sends: views into *message, body and rcpt_to, set by the origin
    // once every recipient is in (valid while the job lives); outbound.body is set by the
    // connection that sends it, once it has the body.
    protocol::outbound_message outbound;
    // The body: the origin's cached copy if it is still cached when a connection takes the job
    // (a job waiting in a ready queue holds no body, so a long queue costs no body memory),
    // else read back from the origin's spool by that connection (queue/outbound.h).
    std::weak_ptr<const message_body> cached;
    record_location where;
    std::uint64_t message_size = 0;          // of the message as spooled: the last bytes of its record
    const std::string* spool_dir = nullptr;  // the origin shard's (outlives every job)
    body_ptr body;                           // held while the job is on a connection
    std::int64_t started_ms = 0;  // when the attempt was scheduled (monotonic)
    // The message's arrival + --max-age (Unix microseconds; 0: none): a job still waiting at
    // its site then (held by the message rate or a suspension) ends there as expired.
    std::uint64_t expires_us = 0;
    std::uint64_t arrival_us = 0;  // the message's arrival (Unix microseconds): /metrics' oldest age by site
    // The message's arrival + --delay-warning (Unix microseconds; 0: none, or the notice is
    // sent or already asked for): a job still waiting at its site then makes its site ask the
    // origin for the delay notice (destination_pool::tick), once per job.
    std::uint64_t warn_us = 0;
    // The site the job goes to (queue/destination_pool.h), set before it is sent to the site's
    // owner shard: by the origin for a static route, by the domain's owner once the MX plan is
    // known. site_key is what the owner shard is chosen by (hash % shards).
    std::string site;              // "mx1.example.net,mx2.example.net" or "192.0.2.1:25"
    // site, "|domain=D" when D has a domain rule, "|tls=P" as the route key, "|src=NAME" with an
    // egress source: each (source, site) is a site of its own (limits, controller, back-off).
    std::string site_key;
    std::string site_rule_domain;  // D above, or ""
    std::vector<core::endpoint> site_targets;  // the addresses to try, in order
    std::vector<std::string> site_hosts;       // the host name of each
    std::int64_t attempt_ms = 0;   // when a connection took it (the owner's monotonic clock)
    // The egress source its connections bind, chosen by the origin when it made the job (its
    // pool by the message's sender domain or AUTH user, the source by the origin shard's
    // egress_chooser: queue/egress.h); null: the system-chosen address. The relay's table.
    const egress_source* egress = nullptr;
    // max_recipients_per_transaction (issue 17), kept by the site's owner: the job's recipients
    // go in transactions of at most the site's cap, outbound.rcpt_to viewing those of the
    // transaction being sent, from batch_first on; batched holds the outcomes of the
    // transactions before it (one per recipient, in rcpt_to's order), which the pool puts in
    // front of the job's last outcome when the job ends.
    std::size_t batch_first = 0;
    std::vector<protocol::recipient_outcome> batched;
    // The message's tenant (queue/suppression.h tenant_of(), ASCII letters lower-cased; "" for
    // none) and campaign (message_store::campaign_of(), lower-cased; "" for none), set by the
    // origin: their limits hold it at the site (queue/destination_pool.h).
    std::string tenant;
    std::string campaign;
    // Its key for `which` limit.
    [[nodiscard]] const std::string& key_of(keyed_limit which) const noexcept {
        return which == keyed_limit::tenant ? tenant : campaign;
    }
    // A pool with a warm-up (queue/warmup.h): the source is chosen only once the site and its
    // provider are known, by the origin (its round robin and its share of each day's
    // allowance); until then egress is null. Null: chosen when the job was made, as above.
    const egress_pool* choose_from = nullptr;
    std::string site_provider;  // the site's provider (shaping rules), "" if none: set with the site
};

// A queue control request (issue 18) on its way to a shard (cross_message::kind::admin) and that
// shard's report on its way back (kind::admin_done): the request is shared read-only by every
// shard; each call is one shard's.
struct admin_call {
    std::shared_ptr<const admin_request> request;
    std::uint64_t ticket = 0;  // the asking shard's (queue/delivery.h administer_all)
    unsigned from = 0;         // the asking shard
    admin_report report;       // kind::admin_done
};

// What crosses between shards' deliveries (core::mailbox, SPSC + MSG_RING).
struct cross_message {
    // job: for a destination (route key) the receiver owns; site_job: for a site it owns;
    // outcome: a job of the receiver's is over; held: one of the receiver's messages waits at
    // a site past its --delay-warning (the job stays there: the receiver must not touch it, so
    // the message and recipients come as copies); choose: a job back to its origin, which gives
    // it its source (delivery_job::choose_from); automate: an automation rule fired on a site
    // named hop.site on another shard (the rule's copy in `rule`, the reply in `why`): it reaches
    // the receiver's sites of that name or provider (destination_pool::apply_automation);
    // admin: a queue control request for the receiver to carry out (`call`); admin_done: its
    // report back to the asking shard.
    enum class kind : std::uint8_t { job, site_job, outcome, held, choose, automate, admin, admin_done } type = kind::job;
    std::shared_ptr<const automation_rule> rule;  // kind automate
    std::unique_ptr<admin_call> call;             // kinds admin and admin_done
    delivery_job* job = nullptr;
    protocol::message_outcome outcome;  // kind outcome
    next_hop_ref hop;
    std::string why;
    stored_message* message = nullptr;      // kind held
    std::vector<std::uint32_t> rcpt_index;  // kind held
};

}  // namespace ringrelay::queue
