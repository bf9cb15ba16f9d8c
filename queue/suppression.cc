// queue/suppression.cc: see suppression.h.
#include "queue/suppression.h"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "core/clock.h"
#include "core/duration.h"
#include "core/invariant.h"
#include "queue/suppression_file.h"

namespace ringrelay::queue {

std::expected<std::uint32_t, std::string> parse_suppression_ttl(std::string_view text) {
    if (text == "0") return 0;
    auto d = core::parse_duration(text);
    if (!d) return std::unexpected(d.error().message);
    const auto ms = static_cast<std::uint64_t>(d->count());
    const std::uint64_t s = (ms + 999) / 1000;
    return static_cast<std::uint32_t>(std::min<std::uint64_t>(s, 0xFFFFFFFFu));
}

std::uint32_t suppression_seconds(std::uint64_t time_us) noexcept {
    const std::uint64_t s = (time_us + 999999) / 1000000;
    return static_cast<std::uint32_t>(std::min<std::uint64_t>(std::max<std::uint64_t>(s, 1), 0xFFFFFFFFu));
}

std::string_view tenant_of(const protocol::envelope& env) noexcept {
    if (!env.auth_user.empty()) return env.auth_user;
    const std::string_view from = env.mail_from;
    const auto at = from.rfind('@');
    if (at == std::string_view::npos || at + 1 == from.size()) return {};
    return from.substr(at + 1);
}

void format_suppressed_reply(std::string& out, std::string_view recipient, std::uint32_t since_s) {
    out.clear();
    out += '<';
    out += recipient;
    out += ">: recipient suppressed after a hard bounce on ";
    const std::time_t t = static_cast<std::time_t>(since_s);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char date[40];
    std::snprintf(date, sizeof date, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
    out += date;
}

void log_suppressed(core::log_writer& log, const suppressed_rcpt& r) {
    if (!log.enabled()) return;
    std::string& line = log.line_buffer();
    line += "{\"type\":\"Suppressed\",\"time\":\"";
    line += core::iso8601_us(static_cast<std::int64_t>(r.now_us));
    line += "\",\"shard\":";
    line += std::to_string(r.shard);
    line += ",\"client\":\"";
    core::append_json_escaped(line, r.client);
    if (!r.proxy.empty()) {
        line += "\",\"proxy\":\"";
        core::append_json_escaped(line, r.proxy);
    }
    line += "\",\"sender\":\"";
    core::append_json_escaped(line, r.transaction->mail_from);
    line += "\",\"recipient\":\"";
    core::append_json_escaped(line, r.recipient);
    line += "\",\"tenant\":\"";
    std::string tenant(r.tenant);
    suppression_normalise(tenant);  // as the list and --list-suppressed spell it
    core::append_json_escaped(line, tenant);
    line += "\",\"auth\":";
    if (r.transaction->auth_user.empty()) {
        line += "null";
    } else {
        line += '"';
        core::append_json_escaped(line, r.transaction->auth_user);
        line += '"';
    }
    line += ",\"suppressed_since\":\"";
    line += core::iso8601_us(static_cast<std::int64_t>(r.since_s) * 1000000);
    line += "\",\"reply\":\"550 5.1.1 ";
    core::append_json_escaped(line, r.reply);
    line += "\"}\n";
}

suppression_list::suppression_list(suppression_table& table, storage& s, std::string dir, std::uint64_t generation,
                                   unsigned shard)
    : _table(table),
      _storage(s),
      _dir(std::move(dir)),
      _name(suppression_journal_name(generation, shard)),
      _path(_dir + "/" + _name),
      _shard(shard) {
    // As the spool's (queue/record.h): a forged record inside an address must not pass.
    if (::getrandom(&_salt, sizeof _salt, 0) != static_cast<ssize_t>(sizeof _salt))
        _salt = static_cast<std::uint32_t>(core::unix_us() * 0x9e3779b1u);
    encode_segment_record(_segment_records, _salt);
    encode_segment_record(_segment_records, _salt);
}

suppression_list::~suppression_list() {
    if (_fd >= 0) _storage.close_file(_fd);
}

std::expected<void, std::string> suppression_list::open() {
    auto fd = _storage.create_file(_dir, _name);
    if (!fd) return std::unexpected(_path + ": " + fd.error().message());
    _fd = *fd;
    return {};
}

std::optional<std::uint32_t> suppression_list::check(const protocol::envelope& transaction,
                                                     std::string_view recipient, std::uint32_t now_s) const noexcept {
    const std::string_view tenant = tenant_of(transaction);
    if (tenant.empty()) return std::nullopt;
    return _table.lookup(tenant, recipient, now_s);
}

bool suppression_list::on_permanent_failure(const protocol::envelope& env, std::string_view recipient,
                                            const protocol::bounce_verdict& verdict, std::uint64_t now_us) {
    if (!suppresses(verdict.cls)) return false;
    const std::string_view tenant = tenant_of(env);
    if (tenant.empty() || recipient.empty()) return false;
    add(tenant, recipient, suppression_source::hard_bounce, env.queue_id, now_us);
    ++_stats.added;
    return true;
}

void suppression_list::add(std::string_view tenant, std::string_view address, suppression_source source,
                           std::uint64_t queue_id, std::uint64_t time_us, std::string_view reason) {
    _table.add(tenant, address, suppression_seconds(time_us), static_cast<std::uint32_t>(core::unix_us() / 1000000));
    std::string t(tenant), a(address);
    suppression_normalise(t);
    suppression_normalise(a);
    encode_suppression_record(_pending, t, a, source, queue_id, time_us, _salt, reason);
}

bool suppression_list::remove(std::string_view tenant, std::string_view address, suppression_source by,
                              std::uint64_t time_us) {
    if (!_table.remove(tenant, address)) return false;
    std::string t(tenant), a(address);
    suppression_normalise(t);
    suppression_normalise(a);
    encode_suppression_record(_pending, t, a, by, 0, time_us, _salt, {}, suppression_change::remove);
    return true;
}

void suppression_list::when_durable(std::function<void(bool)> done) {
    if (!_pending.empty()) {
        _pending_waiters.push_back(std::move(done));
    } else if (_in_flight) {
        _batch_waiters.push_back(std::move(done));
    } else {
        _ready_waiters.push_back(std::move(done));  // told at the turn's end, not from inside this call
    }
}

void suppression_list::tell(std::vector<std::function<void(bool)>>& waiters, bool ok) noexcept {
    std::vector<std::function<void(bool)>> now;
    now.swap(waiters);
    for (auto& w : now) w(ok);
}

void suppression_list::on_turn_end() noexcept {
    // Between turns no lookup is running on this shard (a lookup holds the table's array only
    // inside lookup()): a quiescent state, once per turn.
    _table.quiescent(_shard);
    tell(_ready_waiters, true);
    if (!_in_flight && !_retry_wait && !_pending.empty() && _fd >= 0) start_commit();
}

void suppression_list::tick() noexcept {
    _table.reclaim();
    _retry_wait = false;
}

void suppression_list::leave() noexcept { _table.offline(_shard); }

void suppression_list::start_commit() noexcept {
    _batch.swap(_pending);
    _pending.clear();
    _batch_waiters.swap(_pending_waiters);
    _pending_waiters.clear();
    _iov_count = 0;
    if (_committed_end == 0)  // a fresh file: its segment records go out with the first batch
        _iov[_iov_count++] = iovec{_segment_records.data(), _segment_records.size()};
    _iov[_iov_count++] = iovec{_batch.data(), _batch.size()};
    _iov_next = 0;
    _write_offset = _committed_end;
    _batch_end = _committed_end + _batch.size() + (_committed_end == 0 ? _segment_records.size() : 0);
    _in_flight = true;
    submit_write();
}

void suppression_list::submit_write() noexcept {
    _storage.write(_fd, &_iov[_iov_next], _iov_count - _iov_next, _write_offset, &_write_done);
}

void suppression_list::on_write(int res, std::uint32_t) noexcept {
    if (res <= 0) return failed(res < 0 ? -res : EIO);
    const auto n = static_cast<std::size_t>(res);
    _write_offset += n;
    _iov_next = static_cast<unsigned>(skip_written(std::span<iovec>(_iov, _iov_count), _iov_next, n));
    if (_iov_next < _iov_count) return submit_write();  // a short write: the rest
    RR_ASSERT(_write_offset == _batch_end);
    _storage.fdatasync(_fd, &_sync_done);
}

void suppression_list::on_sync(int res, std::uint32_t) noexcept {
    if (res < 0) return failed(-res);
    _committed_end = _batch_end;
    _batch.clear();
    _in_flight = false;
    ++_stats.journal_commits;
    if (_reported) core::diag(_path + ": suppression journal writable again");
    _reported = false;
    tell(_batch_waiters, true);
}

void suppression_list::failed(int err) noexcept {
    // Nothing past the last durable end can be trusted (after a failed fdatasync the kernel
    // may have dropped the pages): cut it, and write the batch again later, before anything
    // added since.
    _storage.truncate(_fd, _committed_end);
    _batch += _pending;
    _pending.swap(_batch);
    _batch.clear();
    _in_flight = false;
    _retry_wait = true;
    ++_stats.journal_failures;
    tell(_batch_waiters, false);
    if (!_reported)
        core::diag(_path + ": suppression journal write failed: " + std::strerror(err) +
                   "; the entries are in effect and kept in memory, written again every second");
    _reported = true;
}

}  // namespace ringrelay::queue
