// tools/sink/connection.cc: see connection.h.
#include "tools/sink/connection.h"

#include <fcntl.h>
#include <unistd.h>

#include "core/net.h"
#include "tools/sink/shard.h"

namespace ringrelay::sink {

connection::connection(shard& owner, int fd, const sockaddr* peer)
    // The sink takes mail for anyone: every client may relay (no 554 5.7.1 at RCPT).
    : server_connection(owner, fd, protocol::client_info{core::address_text(peer), protocol::relay_trust::trusted},
                        queue::listener_kind::plain, *this),
      _shard(owner) {}

connection::~connection() {
    if (_save_fd >= 0) ::close(_save_fd);
}

std::uint64_t connection::next_queue_id() noexcept { return _shard.next_queue_id(); }
std::string_view connection::rfc5322_date() noexcept { return _shard.rfc5322_date(); }

protocol::host_reply connection::check_mail(const protocol::client_info& client) noexcept {
    per_ip_rate& rate = _shard.shared().rate;
    if (!rate.enabled() || rate.acquire(address_slot, monotonic_ns())) return {};
    bump(_shard.mutable_stats().rate_limited);
    return {protocol::reply_id::rate_limited, client.address};
}

void connection::begin_commit() noexcept {
    _verdict = _shard.faults().next();
    if (_shard.options().delay_ms != 0) return arm_delay();
    if (must_save()) return start_save();
    answer();  // at once: the engine goes on with the same input
}

bool connection::must_save() const noexcept {
    return _verdict == verdict::accept && _shard.shared().save_dir_fd >= 0;
}

void connection::start_save() noexcept {
    const protocol::envelope& env = session().message_envelope();
    const std::string_view message = session().message();
    temp_name(env.queue_id, _temp_name);
    saved_name(env.queue_id, _final_name);
    _save_header.clear();
    append_save_header(_save_header, env, peer(), message.size());
    _save_ok = false;
    _save_step = save_step::open;
    io_uring_prep_openat(_shard.reactor().sqe(&_save), _shard.shared().save_dir_fd, _temp_name,
                         O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
}

void connection::submit_write() noexcept {
    // The header block then the message, from _save_offset on (a short write continues).
    const std::string_view message = session().message();
    const std::uint64_t header = _save_header.size();
    int count = 0;
    if (_save_offset < header) {
        _iov[count++] = {const_cast<char*>(_save_header.data()) + _save_offset,
                         static_cast<std::size_t>(header - _save_offset)};
    }
    const std::uint64_t body_from = _save_offset > header ? _save_offset - header : 0;
    if (body_from < message.size()) {
        _iov[count++] = {const_cast<char*>(message.data()) + body_from,
                         static_cast<std::size_t>(message.size() - body_from)};
    }
    _save_step = save_step::write;
    io_uring_prep_writev(_shard.reactor().sqe(&_save), _save_fd, _iov, static_cast<unsigned>(count), _save_offset);
}

void connection::on_save(int res, std::uint32_t) noexcept {
    switch (_save_step) {
    case save_step::open:
        if (res < 0) return save_failed("open", res);
        _save_fd = res;
        _save_offset = 0;
        submit_write();
        return;
    case save_step::write: {
        if (res <= 0) return save_failed("write", res == 0 ? -EIO : res);
        _save_offset += static_cast<std::uint64_t>(res);
        if (_save_offset < _save_header.size() + session().message().size()) return submit_write();
        _save_step = save_step::close;
            io_uring_prep_close(_shard.reactor().sqe(&_save), _save_fd);
        _save_fd = -1;
        return;
    }
    case save_step::close:
        if (res < 0) return save_failed("close", res);
        _save_step = save_step::rename;
            io_uring_prep_renameat(_shard.reactor().sqe(&_save), _shard.shared().save_dir_fd, _temp_name,
                               _shard.shared().save_dir_fd, _final_name, 0);
        return;
    case save_step::rename:
        if (res < 0) return save_failed("rename", res);
        _save_ok = true;
        return answer();
    }
}

void connection::save_failed(const char* step, int res) noexcept {
    _shard.report_save_error(step, -res);
    if (_save_fd >= 0) {
        ::close(_save_fd);  // error path only: synchronous is fine
        _save_fd = -1;
    }
    (void)::unlinkat(_shard.shared().save_dir_fd, _temp_name, 0);
    _save_ok = false;
    answer();
}

void connection::arm_delay() noexcept {
    const std::uint32_t ms = _shard.options().delay_ms;
    _delay_ts.tv_sec = ms / 1000;
    _delay_ts.tv_nsec = static_cast<long long>(ms % 1000) * 1000000LL;
    _delay_armed = true;
    io_uring_prep_timeout(_shard.reactor().sqe(&_delay), &_delay_ts, 0, 0);
}

// The stop's grace period is over: the delay is cut short.
void connection::cancel_commit() noexcept {
    if (_delay_armed)
        io_uring_prep_timeout_remove(_shard.reactor().sqe_ignored(), reinterpret_cast<std::uint64_t>(&_delay), 0);
}

void connection::on_delay(int res, std::uint32_t) noexcept {
    _delay_armed = false;
    // Cut off at shutdown: the message goes unanswered, unsaved and uncounted.
    if (res == -ECANCELED) return commit_dropped();
    if (must_save()) return start_save();
    answer();
}

void connection::answer() noexcept {
    shard_stats& stats = _shard.mutable_stats();
    switch (_verdict) {
    case verdict::accept:
        if (_shard.shared().save_dir_fd >= 0 && !_save_ok) {
            commit_done(protocol::commit_result::io_error);  // 451 4.3.0
            return;
        }
        _shard.message_received();
        if (tls_active()) bump(stats.received_tls);
        commit_done(protocol::commit_result::ok);
        return;
    case verdict::defer:
        bump(stats.deferred);
        if (const std::string& text = _shard.shared().options.defer_reply; !text.empty()) {
            commit_done(protocol::host_reply{protocol::reply_id::host_text, text});
        } else {
            commit_done(protocol::host_reply{protocol::reply_id::message_deferred, {}});
        }
        return;
    case verdict::reject:
        bump(stats.rejected);
        if (const std::string& text = _shard.shared().options.reject_reply; !text.empty()) {
            commit_done(protocol::host_reply{protocol::reply_id::host_text, text});
        } else {
            commit_done(protocol::host_reply{protocol::reply_id::message_rejected, peer()});
        }
        return;
    case verdict::disconnect:
        // Replies already given go out; the end of data gets none, the connection closes.
        bump(stats.disconnected);
        commit_dropped();
        return;
    }
}

}  // namespace ringrelay::sink
