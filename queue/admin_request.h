// queue/admin_request.h: the queue control API's vocabulary (issue 18; the routes are
// queue/http_api.h's): a request read from its JSON body and checked (simdjson), what one shard
// reports for it (admin_report, filled by its delivery: queue/delivery.h administer()), the
// reports of every shard put together (merge), and the JSON answer (render_admin_report).
// The parsing and rendering are pure: no clocks (the caller gives the time), no I/O.
//
// A request crosses to every shard (queue/delivery_job.h cross_message::kind::admin) as an
// immutable copy shared by all of them; each shard's report comes back to the shard serving the
// HTTP request, which answers once every shard has (admin_gateway).
//
// SECURITY: the body is the client's (at most core::http_max_body); simdjson bounds the parse,
// every field is checked for its type, unknown fields are refused.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ringrelay::queue {

enum class admin_action : std::uint8_t { queue, message, suspend, resume, flush, bounce };

// What a request names. Values of site, provider, domain and tenant are compared without case
// (they are kept lower-cased); sender too (the whole address).
enum class admin_selector : std::uint8_t { all, site, provider, domain, tenant, sender, queue_id };

[[nodiscard]] std::string_view selector_name(admin_selector s) noexcept;

struct admin_request {
    admin_action action = admin_action::queue;
    admin_selector selector = admin_selector::all;
    std::string value;              // lower-cased; "" for all
    std::uint64_t queue_id = 0;     // selector queue_id, and GET /api/v1/messages/ID
    std::uint64_t duration_us = 0;  // suspend: how long
    std::string reason;             // bounce: said in the DSN and the log
};

// The body of POST /api/v1/{suspend,resume,flush,bounce} (action one of those), checked:
//   suspend  exactly one of "site", "provider", "domain", "tenant" (a non-empty string) and
//            "duration" (core/duration.h: "1h", "90m"; more than 0)
//   resume   exactly one of "site", "provider", "domain", "tenant"
//   flush    nothing (an empty body, or {}: every deferred message), or "domain"
//   bounce   exactly one of "domain", "sender", "queue_id" (16 hex digits) and "reason"
// The error names the field: `"duration": not a duration: "1x"`, `unknown field "foo"`.
[[nodiscard]] std::expected<admin_request, std::string> parse_admin_body(admin_action action, std::string_view body);

// A queue id as the relay writes it (16 hex digits, protocol/received_header.h); nullopt if not.
[[nodiscard]] std::optional<std::uint64_t> parse_queue_id(std::string_view text) noexcept;

// The state of a site as GET /api/v1/queue shows it; a larger value wins when shards merge.
enum class site_state : std::uint8_t { active, backing_off, suspended };

// Postfix qshape's age buckets: minutes since arrival in [0, 5), [5, 10), [10, 20), [20, 40),
// [40, 80), [80, 160), [160, 320) and 320 or more. GET /api/v1/queue counts each site's queued
// messages in them ("ages"), and ringrelayctl queue prints them as qshape does.
inline constexpr std::size_t age_bucket_count = 8;
using age_counts = std::array<std::uint64_t, age_bucket_count>;

// The bucket of a message that arrived at arrival_us, seen at now_us (both Unix us). A message
// from the future (the wall clock went back) counts as just arrived.
[[nodiscard]] std::size_t age_bucket(std::uint64_t arrival_us, std::uint64_t now_us) noexcept;

// The key of bucket i in the JSON answer: "0-5m", "5-10m", ..., "160-320m", "320m+".
[[nodiscard]] std::string_view age_bucket_name(std::size_t i) noexcept;

// One row of GET /api/v1/queue: a site (queue/site_name.h; for deferred mail that reached no
// site, the recipient's domain). Counts are messages (one per message and site).
struct site_row {
    std::string site;
    std::uint64_t queued = 0;     // jobs waiting at the site (its owner shard)
    age_counts ages{};            // the same jobs by age_bucket() when the shard looked: they add up to queued
    std::uint64_t in_flight = 0;  // jobs on a connection of the site now
    std::uint64_t deferred = 0;   // messages with recipients deferred, whose last attempt went there
    std::uint64_t oldest_us = 0;  // the earliest arrival among all of them (Unix us); 0: none
    std::uint64_t next_attempt_us = 0;  // the earliest retry among the deferred; 0: none
    site_state state = site_state::active;
    bool owned = false;  // a shard has the site in memory: the limits below are its
    std::uint32_t connections = 0;
    std::uint32_t connection_limit = 0;
    std::uint64_t rate_milli = 0;  // messages per 1000 s allowed now; 0: no limit
};

struct recipient_view {
    std::string address;
    std::string state;  // pending, in flight, deferred, delivered, bounced, expired
    std::uint32_t attempts = 0;
    std::string last_reply;  // "" if none is known
    std::string site;        // of the last attempt, "" if none is known
};

struct message_view {
    std::uint64_t queue_id = 0;
    unsigned shard = 0;
    std::string sender;
    std::string client;
    std::uint64_t size = 0;
    std::uint64_t arrival_us = 0;
    std::uint64_t next_attempt_us = 0;  // 0: none
    std::vector<recipient_view> recipients;
};

// What one shard did or saw for a request; merged across shards.
struct admin_report {
    std::vector<site_row> sites;           // queue
    std::optional<message_view> message;   // message
    std::uint64_t messages = 0;            // suspend: jobs taken back from sites; flush, bounce, resume: messages
    std::uint64_t recipients = 0;          // flush, bounce
    std::uint64_t in_flight = 0;           // bounce: recipients on their way, not bounced
    std::uint64_t sites_reached = 0;       // suspend, resume: sites in memory it reached
    std::uint64_t suspensions = 0;         // resume: suspensions removed (max over shards: each has a copy)
    std::vector<std::string> queue_ids;    // bounce: the messages bounced
};

void merge(admin_report& into, admin_report&& from);

// The JSON answer to `request` (every shard's reports merged), now_us the wall clock. For
// admin_action::message without a message: an empty string (the caller answers 404).
[[nodiscard]] std::string render_admin_report(const admin_request& request, const admin_report& report,
                                              std::uint64_t now_us);

// Runs a request on every shard and gives the merged report (queue/delivery.h). The callback is
// called once, on the calling shard's thread, maybe before administer_all returns.
class admin_gateway {
public:
    virtual void administer_all(std::shared_ptr<const admin_request> request,
                                std::function<void(admin_report&&)> done) noexcept = 0;

protected:
    ~admin_gateway() = default;
};

}  // namespace ringrelay::queue
