// queue/connection_leases.cc: see connection_leases.h.
#include "queue/connection_leases.h"

#include <algorithm>

#include <hiredis/hiredis.h>

#include "core/log.h"

namespace ringrelay::queue {
namespace {

// KEYS[1] the site's set; ARGV limit, ttl_ms, member. 1: the lease is ours; 0: the limit is reached.
// Redis's own clock (TIME) scores every lease, so the nodes' clocks need not agree.
constexpr std::string_view acquire_script = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[2]))
  return 1
end
return 0
)lua";

// KEYS[1] the site's set; ARGV ttl_ms, members...: each member still there gets ttl_ms more; the
// ones that expired meanwhile (Redis was unreachable longer than a ttl) are returned, not re-added:
// another node may hold their place now.
constexpr std::string_view renew_script = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = {}
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) > now then
    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
  else
    redis.call('ZREM', KEYS[1], ARGV[i])
    gone[#gone + 1] = ARGV[i]
  end
end
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[1]))
return gone
)lua";

// KEYS[1] the site's set; ARGV ttl_ms, members...: each added without the limit's check (the
// connections a node opened under its fallback share, registered when Redis answers again).
constexpr std::string_view enroll_script = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[1]))
return #ARGV - 1
)lua";

constexpr std::int64_t erring_retry_ms = 1000;

}  // namespace

connection_leases::connection_leases(core::redis_client& redis, std::uint32_t cluster_size, std::string node_id,
                                     std::int64_t lease_ttl_ms, std::int64_t recovery_hold_ms)
    : _redis(redis),
      _cluster_size(std::max<std::uint32_t>(cluster_size, 1)),
      _node_id(std::move(node_id)),
      _ttl_ms(lease_ttl_ms),
      _hold_ms(recovery_hold_ms),
      _acquire(std::string(acquire_script)),
      _enroll(std::string(enroll_script)),
      _renew(std::string(renew_script)) {}

connection_leases::~connection_leases() { _redis.cancel(this); }

std::string connection_leases::redis_key(std::string_view site_key) {
    return "ringrelay:conn:" + std::string(site_key);
}

lease_verdict connection_leases::may_open(const std::string& site_key, std::uint32_t open, std::uint32_t limit,
                                          std::int64_t now_ms) {
    const lease_verdict v = decide(site_key, open, limit, now_ms);
    // A site refused with nothing open, held or asked leaves no entry behind (connection_ended()
    // never comes for it: a site whose mail expires while refused would stay for good).
    if (v == lease_verdict::retry_later)
        if (const auto it = _sites.find(site_key);
            it != _sites.end() && it->second.members.empty() && !it->second.asking && it->second.open == 0)
            _sites.erase(it);
    return v;
}

lease_verdict connection_leases::decide(const std::string& site_key, std::uint32_t open, std::uint32_t limit,
                                        std::int64_t now_ms) {
    _now_ms = now_ms;
    if (_fallback_since_ms < 0) _fallback_since_ms = now_ms;
    const std::uint32_t share = std::max<std::uint32_t>(1, limit / _cluster_size);
    site_leases& s = _sites[site_key];
    s.open = open;
    const bool counting = shared() && _reported_shared;
    const bool probe = !counting && _redis.up() && _erring && now_ms >= _retry_after_ms;
    if (!counting && !probe) {
        if (now_ms < _fallback_since_ms + fallback_hold_ms) return lease_verdict::retry_later;
        return open < share ? lease_verdict::open : lease_verdict::retry_later;
    }
    if (counting && now_ms < _hold_until_ms && open >= share) return lease_verdict::retry_later;
    if (s.members.size() > open) return lease_verdict::open;
    if (s.asking) return lease_verdict::asked;
    const std::string member = _node_id + ":" + std::to_string(_next_member++);
    const std::string key = redis_key(site_key);
    const std::string limit_text = std::to_string(limit);
    const std::string ttl_text = std::to_string(_ttl_ms);
    const std::string_view keys[] = {key};
    const std::string_view args[] = {limit_text, ttl_text, member};
    const std::uint64_t tag = _next_tag++;
    if (!_redis.eval(_acquire, keys, args, this, tag)) return lease_verdict::retry_later;
    if (probe) _retry_after_ms = now_ms + erring_retry_ms;
    _requests.emplace(tag, request{request_kind::acquire, site_key});
    s.asking = true;
    s.asked_member = member;
    return lease_verdict::asked;
}

bool connection_leases::over_share(const std::string& site_key, std::uint32_t open, std::uint32_t limit) const noexcept {
    if (shared() && _reported_shared) return open > held(site_key);
    return open > std::max<std::uint32_t>(1, limit / _cluster_size);
}

void connection_leases::connection_ended(const std::string& site_key, std::uint32_t open) {
    const auto it = _sites.find(site_key);
    if (it == _sites.end()) return;
    site_leases& s = it->second;
    s.open = open;
    while (s.members.size() > open) {
        const std::string key = redis_key(site_key);
        const std::string_view argv[] = {"ZREM", key, s.members.back()};
        const std::uint64_t tag = _next_tag++;
        if (_redis.command(argv, this, tag)) _requests.emplace(tag, request{request_kind::release, site_key});
        // Not sent (Redis down): the lease expires there by itself.
        s.members.pop_back();
        ++_stats.released;
    }
    if (s.members.empty() && !s.asking && s.open == 0) _sites.erase(it);
}

bool connection_leases::busy(const std::string& site_key) const noexcept {
    const auto it = _sites.find(site_key);
    return it != _sites.end() && (!it->second.members.empty() || it->second.asking || it->second.open != 0);
}

std::uint32_t connection_leases::held(const std::string& site_key) const noexcept {
    const auto it = _sites.find(site_key);
    return it == _sites.end() ? 0 : static_cast<std::uint32_t>(it->second.members.size());
}

void connection_leases::tick(std::int64_t now_ms) {
    _now_ms = now_ms;
    if (_fallback_since_ms < 0) _fallback_since_ms = now_ms;
    const bool shared_now = shared();
    if (shared_now && !_reported_shared) {
        recovered();
    } else if (!shared_now && _reported_shared && (_redis.state() != core::redis_state::up || _erring)) {
        fell_back(_erring ? "Redis answers with errors" : "Redis unreachable: " + _redis.last_error());
    }
    if (!shared_now || now_ms < _next_renew_ms) return;
    _next_renew_ms = now_ms + std::max<std::int64_t>(_ttl_ms / 3, 1);
    const std::string ttl_text = std::to_string(_ttl_ms);
    for (const auto& [site_key, s] : _sites) {
        if (s.members.empty()) continue;
        const std::string key = redis_key(site_key);
        const std::string_view keys[] = {key};
        std::vector<std::string_view> args{ttl_text};
        for (const std::string& m : s.members) args.push_back(m);
        const std::uint64_t tag = _next_tag++;
        if (_redis.eval(_renew, keys, args, this, tag)) _requests.emplace(tag, request{request_kind::renew, site_key});
    }
}

void connection_leases::report(bool shared_now, std::string_view reason) {
    _reported_shared = shared_now;
    if (shared_now) {
        core::diag("shared limits: counting connection_limit in Redis again");
    } else {
        core::diag("shared limits: " + std::string(reason) + "; each site keeps connection_limit / " +
                   std::to_string(_cluster_size) + " (--cluster-size) connections of this node until Redis answers");
    }
}

void connection_leases::recovered() {
    report(true, "");
    _hold_until_ms = _now_ms + _hold_ms;
    _next_renew_ms = _now_ms + std::max<std::int64_t>(_ttl_ms / 3, 1);
    const std::string ttl_text = std::to_string(_ttl_ms);
    for (auto& [site_key, s] : _sites) {
        // Leases held through the outage are renewed (or found gone); the connections beyond
        // them, opened under the fallback share, get leases of their own.
        std::vector<std::string> fresh;
        while (s.members.size() + fresh.size() < s.open) fresh.push_back(_node_id + ":" + std::to_string(_next_member++));
        const std::string key = redis_key(site_key);
        const std::string_view keys[] = {key};
        if (!s.members.empty()) {
            std::vector<std::string_view> args{ttl_text};
            for (const std::string& m : s.members) args.push_back(m);
            const std::uint64_t tag = _next_tag++;
            if (_redis.eval(_renew, keys, args, this, tag)) _requests.emplace(tag, request{request_kind::renew, site_key});
        }
        if (fresh.empty()) continue;
        std::vector<std::string_view> args{ttl_text};
        for (const std::string& m : fresh) args.push_back(m);
        const std::uint64_t tag = _next_tag++;
        if (!_redis.eval(_enroll, keys, args, this, tag)) continue;
        _requests.emplace(tag, request{request_kind::enroll, site_key});
        for (std::string& m : fresh) s.members.push_back(std::move(m));
    }
}

void connection_leases::fell_back(std::string_view reason) {
    _fallback_since_ms = _now_ms;
    report(false, reason);
}

void connection_leases::failed(std::string_view reason) {
    ++_stats.errors;
    if (!_erring && _redis.up()) {
        _erring = true;
        _retry_after_ms = _now_ms + erring_retry_ms;
        if (_reported_shared) fell_back("Redis answers with an error (" + std::string(reason) + ")");
    }
}

void connection_leases::succeeded() {
    _erring = false;
    if (!_reported_shared && _redis.up()) recovered();
}

void connection_leases::redis_reply(std::uint64_t tag, const redisReply* reply, std::string_view) noexcept {
    const auto it = _requests.find(tag);
    if (it == _requests.end()) return;
    const request req = std::move(it->second);
    _requests.erase(it);
    const bool error = reply == nullptr || reply->type == REDIS_REPLY_ERROR;
    if (error) {
        // A lost connection is the client's to report; an error reply is ours (Redis is up).
        if (reply != nullptr) failed(std::string_view(reply->str, reply->len));
        else ++_stats.errors;
    }
    const auto site = _sites.find(req.site_key);
    switch (req.kind) {
    case request_kind::acquire: {
        if (site == _sites.end()) return;
        site_leases& s = site->second;
        s.asking = false;
        bool granted = false;
        if (!error && reply->type == REDIS_REPLY_INTEGER) {
            succeeded();
            granted = reply->integer == 1;
            if (granted) {
                s.members.push_back(std::move(s.asked_member));
                ++_stats.granted;
            } else {
                ++_stats.refused;
            }
        }
        // An error falls back: the site may dispatch again at once under its share.
        if (_listener != nullptr)
            _listener->lease_answer(req.site_key, granted || error ? lease_verdict::open : lease_verdict::retry_later);
        break;
    }
    case request_kind::renew:
        if (error || site == _sites.end() || reply->type != REDIS_REPLY_ARRAY) break;
        succeeded();
        for (std::size_t i = 0; i < reply->elements; ++i) {
            const redisReply* gone = reply->element[i];
            if (gone == nullptr || gone->type != REDIS_REPLY_STRING) continue;
            std::erase(site->second.members, std::string(gone->str, gone->len));
        }
        break;
    case request_kind::release:
    case request_kind::enroll:
        if (!error) succeeded();
        break;
    }
}

}  // namespace ringrelay::queue
