// queue/relay.cc: see relay.h.
#include "queue/relay.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <future>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "core/clock.h"
#include "core/duration.h"
#include "core/log.h"
#include "core/net.h"
#include "core/redis_client.h"
#include "protocol/address.h"
#include "queue/outbound.h"
#include "queue/shaping_rules.h"
#include "queue/suppression.h"
#include "queue/suppression_file.h"

namespace ringrelay::queue {

namespace {

// K of a directory named "shard-K" (digits only); nullopt for any other name.
std::optional<unsigned> shard_directory_index(std::string_view name) {
    if (!name.starts_with("shard-") || name.size() == 6 || name.size() > 12) return std::nullopt;
    unsigned k = 0;
    for (const char c : name.substr(6)) {
        if (c < '0' || c > '9') return std::nullopt;
        k = k * 10 + static_cast<unsigned>(c - '0');
    }
    return k;
}

}  // namespace

namespace {

// The start-up line about the shards' registered buffers (queue/outbound.h): said once for
// the relay, not per shard. `counts`: each shard's; `refusal`: the first shard's refusal.
std::string describe_fixed_buffers(const std::vector<unsigned>& counts, const std::string& refusal) {
    const std::string each = std::to_string(body_piece_size >> 10) + " KiB";
    if (refusal.empty())
        return "registered buffers: " + std::to_string(body_read_buffers) + " x " + each + " per shard (" +
               std::to_string(counts.size()) + " shard(s)) for streamed body reads (READ_FIXED)";
    std::string per_shard;
    for (unsigned n : counts) per_shard += (per_shard.empty() ? "" : ", ") + std::to_string(n);
    std::string limit = "unlimited";
    if (rlimit l{}; ::getrlimit(RLIMIT_MEMLOCK, &l) == 0 && l.rlim_cur != RLIM_INFINITY)
        limit = std::to_string(l.rlim_cur >> 10) + " KiB";
    return "registered buffers: the kernel refused " + std::to_string(body_read_buffers) + " x " + each +
           " per shard (" + refusal + "; RLIMIT_MEMLOCK " + limit + "); registered per shard: " + per_shard +
           "; a streamed body without one is read into plain memory";
}

}  // namespace

std::expected<std::string, std::string> postmaster_address(const core::config& config) {
    const bool defaulted = config.postmaster.empty();
    std::string address = defaulted ? "postmaster@" + config.hostname : config.postmaster;
    const std::string path = "<" + address + ">";
    const auto parsed = protocol::parse_path(path, protocol::path_kind::forward_path);
    if (parsed && !parsed->postmaster_only && !parsed->source_route) return address;
    if (defaulted)
        return std::unexpected("--postmaster: the default address '" + address + "' (postmaster@ the --hostname) "
                               "is not a valid mail address; give --postmaster ADDRESS or a --hostname that is a "
                               "domain name");
    return std::unexpected("--postmaster: '" + address + "' is not a valid mail address (local@domain, RFC 5321)");
}

relay::relay(core::config config, protocol::bounce_rules bounce_rules, storage_factory make_storage)
    : _config(std::move(config)), _bounce_rules(std::move(bounce_rules)), _make_storage(std::move(make_storage)) {
    _server.hostname = _config.hostname;
    _server.max_message_size = _config.max_message_size;
    _server.max_recipients = _config.max_recipients;
    _server.max_errors = _config.max_errors;
    _server.relay_domains = _config.relay_domains;
}

relay::~relay() {
    if (!_go_set) _go.set_value();
    request_stop();
    join();
    if (_log_fd > 2) ::close(_log_fd);
}

std::expected<shaping_load, std::string> relay::load_shaping() const {
    auto load = load_shaping_rules(flag_default_rule(_config.max_connections_per_destination,
                                                     _config.max_messages_per_connection, _config.idle_connection_timeout,
                                                     _config.campaign_header),
                                   _config.shaping, _config.default_shaping ? shipped_shaping::load : shipped_shaping::skip);
    if (!load) return load;
    // A warm-up is an egress source's: it must name one (the sources are loaded first).
    std::vector<std::string_view> sources;
    if (_limits.egress)
        for (const egress_source& s : _limits.egress->sources()) sources.push_back(s.name);
    if (auto ok = check_warmup_sources(load->rules, sources); !ok) return std::unexpected(ok.error());
    return load;
}

std::expected<void, std::string> relay::start() {
    // The egress sources first (each address test-bound), pools and selectors: an error names
    // the flag.
    if (auto egress = egress_table::load(_config.egress_sources, _config.egress_pools, _config.pool_for,
                                         _config.hostname);
        !egress) {
        return std::unexpected(egress.error());
    } else {
        _limits.egress = std::move(*egress);
        _egress_summary = _limits.egress->describe();
    }
    // The shaping rules: a file that does not load stops the start with the file, the key and
    // the reason, before anything else is touched (a warm-up names an egress source, loaded above).
    if (auto shaping = load_shaping(); !shaping) {
        return std::unexpected(shaping.error());
    } else {
        _shaping_summary = describe(*shaping);
        _limits.shaping.replace(std::move(shaping->rules));
    }
    // --redis (issue 19): a host name is looked up once, here, never on a shard.
    if (_config.redis_address) {
        auto resolved = core::resolve_redis_host(*_config.redis_address);
        if (!resolved) return std::unexpected("--redis: " + resolved.error());
        _config.redis_address = std::move(*resolved);
        core::diag("redis: connection_limit shared through " + core::to_string(*_config.redis_address) +
                   "; fallback share limit / " + std::to_string(_config.cluster_size) + " (--cluster-size)");
    }
    if (auto postmaster = postmaster_address(_config); !postmaster) {
        return std::unexpected(postmaster.error());
    } else {
        _server.postmaster = std::move(*postmaster);
    }
    // Before anything touches the spool (the self-signed pair, the suppression list, the
    // shards' segments).
    if (auto lock = spool_lock::acquire(_config.spool); !lock) {
        const spool_lock_error& e = lock.error();
        return std::unexpected("--spool: " + e.text + (e.busy ? "; two relays cannot share a spool" : ""));
    } else {
        _lock.emplace(std::move(*lock));
    }
    // A spool written by more shards than this start has: shard K reads SPOOL/shard-K only, so
    // the mail in the others would wait, unread, until a start with enough shards. Refused.
    if (auto extra = list_spool(_config.spool, _config.shards); !extra) {
        return std::unexpected("--spool: " + extra.error());
    } else if (!extra->messages.empty()) {
        unsigned highest = 0;
        if (DIR* d = ::opendir(_config.spool.c_str()); d != nullptr) {
            while (dirent* e = ::readdir(d))
                if (const auto k = shard_directory_index(e->d_name); k && *k >= highest) highest = *k;
            ::closedir(d);
        }
        return std::unexpected("--shards " + std::to_string(_config.shards) + ": the spool " + _config.spool + " holds " +
                               std::to_string(extra->messages.size()) + " undelivered message(s) in shard directories " +
                               std::to_string(_config.shards) + " to " + std::to_string(highest) +
                               ", which a relay with fewer shards does not read; start with --shards " +
                               std::to_string(highest + 1) + " or more (each shard delivers its own directory)");
    }
    _features = core::probe_kernel_features();
    core::diag(core::describe(_features));
    // Required (Linux 6.0+): multishot accept and receive with a provided buffer ring, and
    // MSG_RING for cross-shard wake-ups. Older kernels are refused with a clear error.
    if (!_features.buf_ring || !_features.multishot_accept || !_features.recv_multishot || !_features.msg_ring)
        return std::unexpected("this kernel lacks io_uring features ringrelay needs (Linux 6.0 or later: "
                               "provided buffer rings, multishot accept/recv, MSG_RING)");
    if (auto ec = _control.init(64, core::kernel_features{}); ec)
        return std::unexpected("io_uring setup failed: " + ec.message());
    _control_ready = true;
    _ktls = core::probe_ktls();
    if (auto ok = setup_tls(); !ok) return std::unexpected(ok.error());
    if (!_config.auth_users.empty()) {
        auto auth = inbound_auth::create(_config);
        if (!auth) return std::unexpected(auth.error());
        _auth = std::move(*auth);
        _server.auth = _config.auth_plaintext ? protocol::auth_offer::always : protocol::auth_offer::under_tls;
        _server.max_auth_failures = _config.auth_max_failures;
        const auto table = _auth->users();
        _auth_summary = "AUTH: PLAIN LOGIN for " + std::to_string(table->users.size()) + " user(s) from " +
                        _config.auth_users + "; " +
                        (_config.auth_plaintext ? std::string("offered on every connection (--auth-plaintext)")
                         : _tls ? std::string("offered only under TLS")
                                : std::string("offered only under TLS, and TLS is off: no client can use it"));
        _auth_summary += "; a check without room waits (up to " + std::to_string(_config.auth_queue_size) +
                         " per shard, " + std::to_string(_config.auth_queue_timeout) + " s)";
        if (table->costs > 1)
            _auth_summary += "; warning: the hashes have " + std::to_string(table->costs) +
                             " different costs, and a check's duration shows which group a user is in "
                             "(rehash them with one cost)";
    }
    if (!_config.dkim_keys.empty()) {
        auto signer = dkim_signer::create(_config);
        if (!signer) return std::unexpected(signer.error());
        _dkim = std::move(*signer);
        _dkim_summary = _dkim->keys()->describe();
    }
    _log_fd = core::open_log(_config.log);
    if (_log_fd < -1) return std::unexpected("--log " + _config.log + ": " + std::strerror(-_log_fd));
    auto intervals = core::parse_duration_list(_config.retry_intervals);
    if (!intervals) return std::unexpected("--retry-intervals: " + intervals.error().message);
    auto max_age = core::parse_duration(_config.max_age);
    if (!max_age) return std::unexpected("--max-age: " + max_age.error().message);
    if (!validate_retry_policy(*intervals, *max_age))
        return std::unexpected("--retry-intervals/--max-age: every interval and the maximum age must be positive");
    _schedule = std::make_unique<retry_schedule>(std::move(*intervals), *max_age);
    if (_config.suppression)
        if (auto ok = setup_suppression(); !ok) return std::unexpected(ok.error());
    setup_warmup();
    if (!_config.unsubscribe_url.empty()) {
        if (!_config.suppression)
            return std::unexpected(std::string("--unsubscribe-url needs the suppression list (drop --no-suppression)"));
        auto links = unsubscribe_links::load(_config.unsubscribe_url, _config.unsubscribe_key);
        if (!links) return std::unexpected(links.error());
        _unsubscribe = std::move(*links);
        _unsubscribe_summary = "unsubscribe links: " + _unsubscribe->base() +
                               "/u/TOKEN on single-recipient messages without List-Unsubscribe" +
                               (_config.http_endpoints.empty() && _config.http_tls_endpoints.empty()
                                    ? "; warning: no --http or --http-tls endpoint serves POST /u/TOKEN"
                                                               : std::string());
    }
    // Plain listeners first, then implicit TLS: the order of endpoints() and the start-up line.
    std::vector<listener_spec> listen;
    for (const core::endpoint& e : _config.listen_endpoints) listen.push_back({e, listener_kind::plain});
    for (const core::endpoint& e : _config.listen_tls_endpoints) listen.push_back({e, listener_kind::implicit_tls});
    if (_config.drain) _drain.store(true, std::memory_order_release);
    _links = std::make_unique<shard_links>(_config.shards);
    _metrics = std::make_unique<metrics_sources>(_config.shards);
    // Plain HTTP first, then HTTPS: the order of http_endpoints() and the start-up line.
    std::vector<http_listen_spec> http_listen;
    for (const core::endpoint& e : _config.http_endpoints) http_listen.push_back({e, core::http_transport::plain});
    for (const core::endpoint& e : _config.http_tls_endpoints) http_listen.push_back({e, core::http_transport::tls});
    if (!http_listen.empty() && _suppressions) _admin_pool = std::make_unique<core::work_pool>(1, 16);
    // The shards start one at a time, each recovering its spool directory first; on a large
    // spool this takes a while, and the line says what the relay is doing meanwhile.
    core::diag("starting " + std::to_string(_config.shards) + " shard(s): recovering the spool in " + _config.spool);
    std::vector<unsigned> fixed_buffers;
    std::string fixed_buffers_refusal;
    for (unsigned i = 0; i < _config.shards; ++i) {
        _shards.push_back(
            std::make_unique<shard>(i, _config, _server, _features, *_schedule, _log_fd, _config.drain ? std::vector<listener_spec>{} : listen, _go_future,
                                    _limits, *_links, _bounce_rules, _make_storage, _tls.get(), _auth.get(), _dkim.get(),
                                    _suppressions.get(), _suppression_generation, http_listen, _metrics.get(), &_drain,
                                    _admin_pool.get(), _unsubscribe.get()));
        _metrics->set(i, &_shards.back()->counters(), &_shards.back()->snapshot());
        // The promise lives as long as the relay: the shard thread may still be inside
        // set_value() when get() returns.
        _ready.push_back(std::make_unique<std::promise<shard_init_result>>());
        std::promise<shard_init_result>* ready = _ready.back().get();
        auto result = ready->get_future();
        shard* s = _shards.back().get();
        _threads.emplace_back([s, ready] { s->run(*ready); });
        shard_init_result r = result.get();
        if (!r.error.empty()) {
            _go.set_value();
            _go_set = true;
            request_stop();
            join();
            return std::unexpected("shard " + std::to_string(i) + ": " + r.error);
        }
        for (const std::string& p : r.recovery_problems) core::diag("shard " + std::to_string(i) + ": spool: " + p);
        _recovered += r.unfinished_messages;
        fixed_buffers.push_back(r.fixed_buffers);
        if (fixed_buffers_refusal.empty()) fixed_buffers_refusal = r.fixed_buffers_refusal;
        if (i == 0) {
            // Every shard binds the same endpoints (SO_REUSEPORT): a port 0 becomes shard 0's.
            for (std::size_t k = 0; k < listen.size() && k < r.bound.size(); ++k) listen[k].endpoint = r.bound[k];
            _bound = r.bound;
            for (std::size_t k = 0; k < http_listen.size() && k < r.http_bound.size(); ++k)
                http_listen[k].endpoint = r.http_bound[k];
            // shard_init_result::http_bound is in http_listen order: --http, then --http-tls.
            const std::size_t plain = std::min(_config.http_endpoints.size(), r.http_bound.size());
            _http_bound.assign(r.http_bound.begin(), r.http_bound.begin() + static_cast<std::ptrdiff_t>(plain));
            _https_bound.assign(r.http_bound.begin() + static_cast<std::ptrdiff_t>(plain), r.http_bound.end());
        }
    }
    _fixed_buffers_summary = describe_fixed_buffers(fixed_buffers, fixed_buffers_refusal);
    // The cross-shard mailboxes (one per ordered pair of shards), then let the shards run.
    const unsigned n = _config.shards;
    for (unsigned from = 0; from < n; ++from)
        for (unsigned to = 0; to < n; ++to)
            if (from != to) _links->connect(from, to, _shards[to]->ring_fd(), _shards[to]->outbound_delivery());
    _go.set_value();
    _go_set = true;
    return {};
}

namespace {

std::string warmup_journal_path(const std::string& spool) { return spool + "/warmup.json"; }

std::int64_t today() { return unix_day(core::unix_us()); }

// Writes `text` to `path` through a temporary name: write, fdatasync, rename, fsync of the
// directory. An error names the step.
std::expected<void, std::string> replace_file(const std::string& path, const std::string& text) {
    const std::string tmp = path + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return std::unexpected("open " + tmp + ": " + std::strerror(errno));
    for (std::size_t done = 0; done < text.size();) {
        const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            const int e = n < 0 ? errno : EIO;
            ::close(fd);
            ::unlink(tmp.c_str());
            return std::unexpected("write " + tmp + ": " + std::strerror(e));
        }
        done += static_cast<std::size_t>(n);
    }
    if (::fdatasync(fd) != 0) {
        const int e = errno;
        ::close(fd);
        ::unlink(tmp.c_str());
        return std::unexpected("fdatasync " + tmp + ": " + std::strerror(e));
    }
    ::close(fd);
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        const int e = errno;
        ::unlink(tmp.c_str());
        return std::unexpected("rename " + tmp + ": " + std::strerror(e));
    }
    const std::string dir = path.substr(0, path.rfind('/'));
    if (const int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); d >= 0) {
        (void)::fsync(d);
        ::close(d);
    }
    return {};
}

}  // namespace

void relay::setup_warmup() {
    const unsigned n = _config.shards;
    _limits.warmup_seeds.assign(n, {});
    _limits.warmup_counts.clear();
    for (unsigned i = 0; i < n; ++i)
        _limits.warmup_counts.push_back(std::make_unique<core::snapshot_slot<std::vector<warmup_count>>>());
    const std::string path = warmup_journal_path(_config.spool);
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        if (!_limits.shaping.current()->warmup.empty())
            _warmup_summary = "warm-up: no journal yet (" + path + "); today's counts start from zero";
        return;
    }
    _warmup_file = true;
    std::ostringstream text;
    text << in.rdbuf();
    _warmup_written = text.str();
    auto counts = parse_warmup_journal(_warmup_written);
    if (!counts) {
        _warmup_summary = "warm-up: " + path + " does not parse (" + counts.error() +
                          "); today's counts start from zero, and the file is rewritten";
        _warmup_written.clear();
        return;
    }
    const std::vector<warmup_count> totals = warmup_totals(*counts, today());
    std::uint64_t sum = 0;
    for (const warmup_count& c : totals) sum += c.used;
    for (unsigned i = 0; i < n; ++i) _limits.warmup_seeds[i] = warmup_seed(totals, i, n);
    _warmup_summary = "warm-up: restored today's counts from " + path + ": " + std::to_string(sum) +
                      " message(s) over " + std::to_string(totals.size()) + " source schedule(s)";
}

std::string relay::save_warmup(bool now) {
    const std::int64_t t = core::monotonic_ms();
    if (!now && t - _warmup_saved_ms < warmup_save_interval_ms) return {};
    _warmup_saved_ms = t;
    std::vector<warmup_count> all;
    for (const auto& slot : _limits.warmup_counts) {
        const auto held = slot->read();
        if (held.get() == nullptr) return {};  // the shard is publishing: next time
        all.insert(all.end(), held.get()->begin(), held.get()->end());
    }
    const std::string text = format_warmup_journal(warmup_totals(all, today()));
    if (text == _warmup_written && (_warmup_file || text.empty())) return {};
    const std::string path = warmup_journal_path(_config.spool);
    if (auto ok = replace_file(path, text); !ok) {
        const bool first = _warmup_error.empty();
        _warmup_error = ok.error();
        return first ? "warm-up: cannot save the journal (" + ok.error() + "); retrying every " +
                           std::to_string(warmup_save_interval_ms / 1000) + " s; the counts are in memory"
                     : std::string();
    }
    _warmup_written = text;
    _warmup_file = true;
    if (_warmup_error.empty()) return {};
    _warmup_error.clear();
    return "warm-up: the journal is saved again (" + path + ")";
}

std::expected<void, std::string> relay::setup_suppression() {
    auto ttl = parse_suppression_ttl(_config.suppression_ttl);
    if (!ttl) return std::unexpected("--suppression-ttl: " + ttl.error());
    const std::string dir = suppression_directory(_config.spool);
    auto state = load_suppressions(dir);
    if (!state) return std::unexpected("suppression list: " + state.error());
    for (const std::string& p : state->problems) core::diag("suppression list: " + p);
    const auto now_us = static_cast<std::uint64_t>(core::unix_us());
    const std::size_t found = state->entries.size();
    drop_expired(state->entries, now_us, *ttl);
    // A new generation every start: the list compacted (expired entries gone, each pair once),
    // and fresh journal files for the shards (queue/suppression_file.h).
    _suppression_generation = state->generation + 1;
    if (auto ok = write_suppressions(dir, _suppression_generation, state->entries); !ok)
        return std::unexpected("suppression list: " + ok.error());
    _suppressions = std::make_unique<suppression_table>(_config.shards, *ttl);
    const auto now_s = static_cast<std::uint32_t>(now_us / 1000000);
    _suppressions->reserve(state->entries.size(), now_s);
    for (const suppression_entry& e : state->entries)
        _suppressions->add(e.tenant, e.address, suppression_seconds(e.time_us), now_s);
    _suppression_summary = "suppression: " + std::to_string(state->entries.size()) + " entr" +
                           (state->entries.size() == 1 ? "y" : "ies") + " in " + dir;
    if (found != state->entries.size())
        _suppression_summary += " (" + std::to_string(found - state->entries.size()) + " expired, dropped)";
    _suppression_summary += *ttl == 0 ? "; entries never expire (--suppression-ttl 0)"
                                      : "; entries expire after " + _config.suppression_ttl;
    return {};
}

std::string relay::reload_config(core::config next) {
    std::vector<const core::flag_descriptor*> applied;
    std::string kept;
    auto keep = [&](const core::flag_descriptor* f, std::string_view why) {
        kept += kept.empty() ? "" : ", ";
        kept += f->name;
        if (!why.empty()) kept += " (" + std::string(why) + ")";
    };
    for (const core::flag_descriptor* f : core::changed_flags(_config, next)) {
        const std::string_view n = f->name;
        if (!f->live) {
            keep(f, {});
        } else if (n.starts_with("--dkim-") && !_dkim) {
            keep(f, "DKIM was off at start");
        } else if (n == "--auth-users" && (!_auth || next.auth_users.empty())) {
            keep(f, _auth ? "AUTH cannot be turned off live" : "AUTH was off at start");
        } else if ((n == "--tls-cert" || n == "--tls-key") && !_tls) {
            keep(f, "TLS was off at start");
        } else if ((n == "--tls-cert" || n == "--tls-key") && (next.tls_cert.empty() || next.tls_key.empty())) {
            keep(f, "TLS needs both --tls-cert and --tls-key to switch live");
        } else if (n == "--outbound-ca-file" && !next.outbound_ca_file.empty() &&
                   !core::tls_context::client(core::tls_client_options{core::tls_verify::peer, next.outbound_ca_file})) {
            // The shards switch on the path itself (queue/tls_client_policy.h): it must load first.
            keep(f, "the file does not load");
        } else {
            applied.push_back(f);
        }
    }
    std::string report;
    if (!kept.empty()) report += "reload: config: needs a restart, kept as it was: " + kept + "\n";
    if (applied.empty()) {
        report += "reload: config: no flag to apply changed\n";
    } else {
        core::copy_flags(_config, next, applied);
        _server.max_message_size = _config.max_message_size;
        _server.max_recipients = _config.max_recipients;
        _server.max_errors = _config.max_errors;
        _server.relay_domains = _config.relay_domains;
        if (_tls && !_config.tls_cert.empty() && !_config.tls_key.empty()) {
            _tls_cert_file = _config.tls_cert;
            _tls_key_file = _config.tls_key;
        }
        _limits.live.store(std::make_shared<const inbound_limits::live_settings>(
                               inbound_limits::live_settings{_config, _server}),
                           std::memory_order_release);
        _limits.live_generation.fetch_add(1, std::memory_order_acq_rel);
        std::string names;
        for (const core::flag_descriptor* f : applied) names += (names.empty() ? "" : ", ") + std::string(f->name);
        report += "reload: config: applied " + names + "; shards take it within a second\n";
    }
    return report + reload();
}

std::string relay::reload() {
    std::string shaping_report;
    // The shaping files again: all load, or the rules in use stay (queue/shaping_table.h; the
    // shards take the new table at their next tick).
    if (auto shaping = load_shaping(); !shaping) {
        shaping_report = "reload: shaping rules kept as they were: " + shaping.error() + "\n";
    } else {
        shaping_report = "reload: " + describe(*shaping) + "\n";
        _limits.shaping.replace(std::move(shaping->rules));
    }
    std::string report = std::move(shaping_report);
    // Outbound: the CA file is loaded here first; only if it loads do the shards switch (at
    // their next tick). A missing or half-written file keeps the contexts in use.
    if (_config.outbound_ca_file.empty()) {
        _limits.outbound_tls_generation.fetch_add(1, std::memory_order_acq_rel);
    } else if (auto probe = core::tls_context::client(
                   core::tls_client_options{core::tls_verify::peer, _config.outbound_ca_file});
               !probe) {
        report += "reload: --outbound-ca-file kept as it was: " + probe.error().text + "\n";
    } else {
        _limits.outbound_tls_generation.fetch_add(1, std::memory_order_acq_rel);
        report += "reload: --outbound-ca-file " + _config.outbound_ca_file + "\n";
    }
    if (_tls) {
        auto credentials = core::tls_credentials::load_pem(_tls_cert_file, _tls_key_file);
        std::expected<core::tls_context, core::tls_error> probe = std::unexpected(core::tls_error{});
        if (credentials) probe = core::tls_context::server(*credentials, &_tls->ticket_keys);
        if (!credentials) {
            report += "reload: TLS certificate kept as it was: " + credentials.error().text;
        } else if (!probe) {
            report += "reload: TLS certificate kept as it was: " + probe.error().text;
        } else {
            report += "reload: TLS certificate " + _tls_cert_file + " (CN=" + credentials->common_name() + ", " +
                     credentials->sha256_fingerprint() + "); shards switch within a second";
            _tls->credentials.store(std::make_shared<const core::tls_credentials>(std::move(*credentials)));
            _tls->generation.fetch_add(1, std::memory_order_acq_rel);
        }
    } else {
        report += "reload: TLS is off";
    }
    report += "\n";
    if (_dkim) {
        auto keys = _dkim->reload(_config);
        report += keys ? "reload: " + *keys : "reload: DKIM keys kept as they were: " + keys.error();
        report += "\n";
    }
    if (!_auth) return report + "reload: no --auth-users";
    auto n = _auth->reload(_config.auth_users);
    if (!n) return report + "reload: --auth-users kept as it was: " + n.error();
    const std::size_t costs = _auth->users()->costs;
    return report + "reload: --auth-users " + _auth->path() + ": " + std::to_string(*n) + " user(s)" +
           (costs > 1 ? "; warning: the hashes have " + std::to_string(costs) + " different costs" : std::string());
}

std::expected<void, std::string> relay::setup_tls() {
    std::string cert = _config.tls_cert;
    std::string key = _config.tls_key;
    std::string origin = "from --tls-cert";
    if (cert.empty()) {
        // No certificate configured: opportunistic STARTTLS with a self-signed one, kept in
        // the spool so that it survives restarts (and its fingerprint with it).
        auto made = core::ensure_self_signed(_config.spool + "/tls", _config.hostname);
        if (!made) {
            if (!_config.listen_tls_endpoints.empty())
                return std::unexpected("--listen-tls needs a certificate: " + made.error().text);
            _tls_summary = "TLS: off (no certificate: " + made.error().text + ")";
            return {};
        }
        cert = made->cert_file;
        key = made->key_file;
        origin = made->source == core::certificate_source::generated ? "self-signed, generated now"
                                                                      : "self-signed, kept from an earlier start";
    }
    auto credentials = core::tls_credentials::load_pem(cert, key);
    if (!credentials) return std::unexpected("TLS: " + credentials.error().text);
    auto keys = core::tls_ticket_keys::generate();
    if (!keys) return std::unexpected("TLS: " + keys.error().text);
    // Build one context now, so that a certificate or a cipher list OpenSSL refuses stops the
    // start here.
    auto probe = core::tls_context::server(*credentials, &*keys);
    if (!probe) return std::unexpected("TLS: " + probe.error().text);
    if (auto ok = probe->set_ciphers(_config.tls_ciphers, _config.tls_ciphersuites); !ok)
        return std::unexpected("--tls-ciphers/--tls-ciphersuites: " + ok.error().text);
    _tls_summary = "TLS: STARTTLS on " + std::to_string(_config.listen_endpoints.size()) + " port(s)";
    if (!_config.listen_tls_endpoints.empty())
        _tls_summary += ", implicit TLS on " + std::to_string(_config.listen_tls_endpoints.size()) + " port(s)";
    if (!_config.http_tls_endpoints.empty())
        _tls_summary += ", HTTPS on " + std::to_string(_config.http_tls_endpoints.size()) + " port(s)";
    _tls_summary += "; certificate " + cert + " (" + origin + ", CN=" + credentials->common_name() + ", " +
                    credentials->sha256_fingerprint() + ")";
    _tls = std::make_unique<inbound_tls>();
    _tls->credentials.store(std::make_shared<const core::tls_credentials>(std::move(*credentials)));
    _tls->ticket_keys = *keys;
    _tls_cert_file = cert;
    _tls_key_file = key;
    // kTLS: if the ULP is there, check with a real handshake that the kernel takes both
    // directions for what OpenSSL negotiates, before any client relies on it.
    const core::ktls_decision ktls = core::decide_ktls(_ktls, _config.ktls, *_tls->credentials.load());
    _tls->kernel = ktls.kernel;
    _ktls.detail = ktls.detail;
    _server.tls = _config.starttls ? protocol::tls_offer::starttls : protocol::tls_offer::none;
    if (!_config.starttls) _tls_summary += "; STARTTLS not offered (--no-starttls)";
    return {};
}

void relay::request_stop() noexcept {
    if (!_control_ready) return;
    for (auto& s : _shards) s->request_stop(_control);
    (void)io_uring_submit(&_control.ring());
}

bool relay::drained() const noexcept {
    return !_shards.empty() && std::all_of(_shards.begin(), _shards.end(), [](const auto& s) { return s->drain_complete(); });
}

std::string relay::reopen_log() {
    if (_config.log.empty() || _config.log == "-" || _log_fd < 0)
        return "SIGUSR1: no log file to reopen (--log is " + std::string(_config.log.empty() ? "off" : "stdout") + ")";
    const int fd = core::open_log(_config.log);
    if (fd < 0) return "SIGUSR1: cannot reopen --log " + _config.log + ": " + std::strerror(-fd) + "; still writing to the file opened before";
    const int moved = ::dup3(fd, _log_fd, O_CLOEXEC);
    const int error = errno;
    ::close(fd);
    if (moved < 0) return "SIGUSR1: cannot reopen --log " + _config.log + ": dup3: " + std::strerror(error) + "; still writing to the file opened before";
    return "SIGUSR1: reopened --log " + _config.log;
}

bool relay::finished() const noexcept {
    return std::all_of(_shards.begin(), _shards.end(), [](const auto& s) { return s->finished(); });
}

void relay::join() {
    for (std::thread& t : _threads)
        if (t.joinable()) t.join();
    _threads.clear();
}

std::uint64_t relay::messages_queued() const noexcept {
    std::uint64_t n = 0;
    for (const auto& s : _shards) n += s->counters().messages_queued.load(std::memory_order_relaxed);
    return n;
}

std::uint64_t relay::messages_failed() const noexcept {
    std::uint64_t n = 0;
    for (const auto& s : _shards) n += s->counters().messages_failed.load(std::memory_order_relaxed);
    return n;
}

std::uint64_t relay::recipients_delivered() const noexcept {
    std::uint64_t n = 0;
    for (const auto& s : _shards) n += s->counters().delivered.load(std::memory_order_relaxed);
    return n;
}

relay::body_reads relay::streamed_body_reads() const noexcept {
    body_reads n;
    for (const auto& s : _shards) {
        n.fixed += s->counters().fixed_buffer_reads.load(std::memory_order_relaxed);
        n.plain += s->counters().plain_buffer_reads.load(std::memory_order_relaxed);
    }
    return n;
}

std::expected<spool_listing, std::string> list_spool(const std::string& spool_dir, unsigned from_shard) {
    spool_listing out;
    DIR* d = ::opendir(spool_dir.c_str());
    if (d == nullptr) {
        if (errno == ENOENT) return out;
        return std::unexpected(spool_dir + ": " + std::strerror(errno));
    }
    std::vector<std::string> shards;
    while (dirent* e = ::readdir(d)) {
        if (const auto k = shard_directory_index(e->d_name); k && *k >= from_shard) shards.emplace_back(e->d_name);
    }
    ::closedir(d);
    std::sort(shards.begin(), shards.end());
    // Messages whose every recipient has a final outcome journaled are not listed.
    struct finished_tracker final : record_visitor {
        std::unordered_map<std::uint64_t, std::vector<bool>> final_rcpts;
        void on_record(std::uint64_t, const decoded_message& rec) override {
            if (rec.header.type == record_type::message) {
                final_rcpts[rec.header.queue_id].assign(rec.envelope.rcpt_to.size(), false);
                return;
            }
            if (rec.header.type == record_type::message_copy) {  // compaction's: it carries the states
                std::vector<bool>& f = final_rcpts[rec.header.queue_id];
                f.assign(rec.envelope.rcpt_to.size(), false);
                for (std::size_t i = 0; i < f.size() && i < rec.states.size(); ++i)
                    f[i] = final_status(rec.states[i].status);
                return;
            }
            if (rec.rcpt_index == delay_warning_index) return;
            auto it = final_rcpts.find(rec.header.queue_id);
            if (it == final_rcpts.end() || rec.rcpt_index >= it->second.size()) return;
            it->second[rec.rcpt_index] = rec.status == recipient_status::delivered ||
                                         rec.status == recipient_status::bounced ||
                                         rec.status == recipient_status::expired;
        }
        [[nodiscard]] bool finished(std::uint64_t id) const {
            auto it = final_rcpts.find(id);
            return it != final_rcpts.end() && !it->second.empty() &&
                   std::all_of(it->second.begin(), it->second.end(), [](bool b) { return b; });
        }
    };
    for (const std::string& s : shards) {
        finished_tracker tracker;
        auto r = recover_directory(spool_dir + "/" + s, &tracker);
        if (!r) return std::unexpected(r.error());
        // A message compacted before a crash may be there twice (original and copy): once.
        std::unordered_set<std::uint64_t> listed;
        for (auto& m : r->messages)
            if (!tracker.finished(m.queue_id) && listed.insert(m.queue_id).second) out.messages.push_back(std::move(m));
        for (auto& p : r->problems) out.problems.push_back(s + "/" + p);
    }
    std::sort(out.messages.begin(), out.messages.end(),
              [](const recovered_message& a, const recovered_message& b) { return a.received_us < b.received_us; });
    return out;
}

}  // namespace ringrelay::queue
