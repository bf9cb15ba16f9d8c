// queue/compactor.cc: see compactor.h.
#include "queue/compactor.h"

#include <cstring>

#include "core/log.h"

namespace ringrelay::queue {

compactor::~compactor() = default;

void compactor::tick(std::int64_t now_ms) noexcept {
    _now_ms = now_ms;
    if (_stopped || !idle() || now_ms < _not_before_ms) return;
    const std::optional<std::uint64_t> candidate = _spool.compaction_candidate();
    if (!candidate) return;
    const std::vector<std::uint64_t> ids = _store.live_in(*candidate, round_bytes);
    if (ids.empty()) {
        // Its holds are not the store's messages (a DSN being committed, say): later.
        _not_before_ms = now_ms + retry_after_ms;
        return;
    }
    _segment = *candidate;
    _round_failed = false;
    _reads.clear();
    ++_counters.rounds;
    for (const std::uint64_t id : ids) {
        const stored_message* m = _store.find(id);
        auto op = std::make_unique<read_op>();
        op->owner = this;
        op->queue_id = id;
        op->where = m->where;
        _reads.push_back(std::move(op));
    }
    _reads_out = _reads.size();
    _round_bytes = 0;
    for (const auto& op : _reads) _round_bytes += op->where.size;
    // One line per round (at most one a second per shard, and only while old segments are
    // mostly dead): what an operator, and the crash test (tests/integration/
    // compaction_crash_test.py), sees of compaction at work.
    core::diag("compaction of segment " + std::to_string(_segment) + " in " + _spool.directory() + ": copying " +
               std::to_string(_reads.size()) + " live message(s), " + std::to_string(_round_bytes) + " bytes");
    for (auto& op : _reads) _spool.read_record(op->where, op->bytes, op.get());
}

void compactor::on_read() noexcept {
    if (--_reads_out == 0) append_copies();
}

void compactor::append_copies() noexcept {
    for (auto& op : _reads) {
        stored_message* m = _store.find(op->queue_id);
        if (m == nullptr || m->segment != _segment) continue;  // finished or moved meanwhile
        std::string error;
        std::string_view message;
        if (auto text = message_read_back(op->bytes, op->result, op->where, m->queue_id); !text) {
            error = std::move(text.error());
        } else {
            message = *text;  // a view into op->bytes, which stays until the round's commits are heard of
        }
        if (!error.empty()) {
            ++_counters.read_errors;
            _round_failed = true;
            core::diag("compaction: " + protocol::format_queue_id(m->queue_id) + " stays in segment " +
                       std::to_string(_segment) + ": cannot read it back: " + error);
            continue;
        }
        const std::vector<recipient_state> states = message_store::states_of(*m);
        _spool.append_copy(m->envelope, m->client, message, m->arrival_us, states, this, _store.campaign_of(*m));
        _commits.push_back(m->queue_id);
        // The copy has no room for it: the journal entry follows the copy in the same commit.
        if (m->delay_warned)
            _spool.append_outcome(m->queue_id, delay_warning_index, recipient_status::deferred, 0, 0);
    }
    if (_commits.empty()) {
        _reads.clear();
        if (_round_failed) _not_before_ms = _now_ms + retry_after_ms;
    }
}

void compactor::committed(protocol::commit_result result) noexcept {
    const std::uint64_t id = _commits.front();
    _commits.pop_front();
    if (result != protocol::commit_result::ok) {
        // ENOSPC or an I/O error: the originals stay where they are, held as before.
        _round_failed = true;
    } else if (stored_message* m = _store.find(id); m != nullptr && m->segment == _segment) {
        const record_location copy = _spool.committed_location();
        ++_counters.copied_messages;
        _counters.copied_bytes += copy.size;
        _store.relocate(*m, copy);
        _copy_segment = copy.segment;
    }
    if (!_commits.empty()) return;
    _reads.clear();
    if (!_round_failed)
        core::diag("compaction of segment " + std::to_string(_segment) + " in " + _spool.directory() +
                   ": copies durable in segment " + std::to_string(_copy_segment) +
                   "; the segment goes once nothing older holds it");
    if (_round_failed) {
        ++_counters.failed_rounds;
        _not_before_ms = _now_ms + retry_after_ms;
        core::diag("compaction of segment " + std::to_string(_segment) + " abandoned for now (" +
                   (result != protocol::commit_result::ok ? "the spool could not commit the copies"
                                                          : "some records could not be read back") +
                   "); the segment is kept");
    }
}

}  // namespace ringrelay::queue
