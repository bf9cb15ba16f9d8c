// Unit tests of queue/compactor.h: the oldest segment's live messages are copied into the
// current segment with their recipients' states, the old segments then go, a restart finds the
// copies (and the copy wins over an original still there after a crash), and faults (a read
// that fails, a commit that fails with ENOSPC) keep the old segment. Hermetic: a temporary
// spool with small segments, the shard's io_uring, fault storage.
#include "queue/compactor.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/log.h"
#include "core/reactor.h"
#include "queue/bounce_rules.h"
#include "queue/storage.h"

using namespace ringrelay;
using namespace ringrelay::queue;
using protocol::commit_result;

namespace {

struct no_reports final : failure_reporter {
    bool report_failures(const stored_message&) noexcept override { return false; }
};

struct waiter final : commit_waiter {
    spool* owner = nullptr;
    std::vector<commit_result> results;
    record_location location;
    void committed(commit_result r) noexcept override {
        results.push_back(r);
        if (r == commit_result::ok) location = owner->committed_location();
    }
};

constexpr std::uint64_t t0 = 1'700'000'000'000'000;
constexpr std::uint64_t segment_limit = 16 * 1024;  // a few messages per segment

class CompactorTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/ringrelay-compact-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        _dir = tmpl;
        ASSERT_FALSE(_reactor.init(256, core::probe_kernel_features()));
        _storage = std::make_unique<fault_storage>(_reactor);
        _log_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
        _log_writer = std::make_unique<core::log_writer>(_reactor, _log_fd);
        auto rules = load_bounce_rules("");
        ASSERT_TRUE(rules.has_value()) << rules.error();
        _rules = std::move(rules->table);
        _log = std::make_unique<delivery_log>(*_log_writer, 0, _rules);
        open_spool();
    }
    void TearDown() override {
        close_spool();
        if (_log_fd >= 0) ::close(_log_fd);
        std::filesystem::remove_all(_dir);
    }
    void open_spool() {
        _spool = std::make_unique<spool>(_reactor, *_storage, _dir + "/shard-0", segment_limit);
        _store = std::make_unique<message_store>(*_spool, *_log, _reporter, queue_mode::deliver, 0, nullptr);
        auto report = _spool->open(_store.get());
        ASSERT_TRUE(report.has_value()) << (report ? "" : report.error());
        (void)_store->finish_recovery();
        _reactor.add_turn_hook(_spool.get());
        _compactor = std::make_unique<compactor>(*_spool, *_store);
    }
    void close_spool() {
        _compactor.reset();
        _store.reset();
        if (_spool) _reactor.remove_turn_hook(_spool.get());
        _spool.reset();
    }

    static std::string text_of(std::uint64_t id) {
        return "Subject: m" + std::to_string(id) + "\r\n\r\n" + std::string(3000, static_cast<char>('a' + id % 26)) +
               "\r\n";
    }
    // Commits message `id` with `recipients` recipients, as the shard does, and stores it; its
    // campaign (issue 17) is "Camp-<id>".
    stored_message* commit(std::uint64_t id, std::size_t recipients = 1) {
        protocol::envelope env;
        env.queue_id = id;
        env.helo = "client.example";
        env.mail_from = "sender@example.org";
        for (std::size_t i = 0; i < recipients; ++i) env.rcpt_to.push_back("r" + std::to_string(i) + "@example.net");
        const std::string text = text_of(id);
        waiter w;
        w.owner = _spool.get();
        const std::string campaign = "Camp-" + std::to_string(id);
        _spool->append(env, "127.0.0.1", text, t0, &w, campaign);
        for (int i = 0; i < 20000 && w.results.empty(); ++i) EXPECT_TRUE(_reactor.run_once(1));
        EXPECT_EQ(w.results, (std::vector<commit_result>{commit_result::ok}));
        return _store->add(env, "127.0.0.1", text, w.location, t0, campaign);
    }
    void deliver(stored_message& m, std::uint32_t i) {
        const next_hop_ref hop{"mx.example.net", "192.0.2.1:25", "", ""};
        protocol::outcome_reply ok;
        ok.origin = protocol::reply_origin::peer;
        ok.code = 250;
        ++m.attempts[i];
        _store->finish(m, i, recipient_status::delivered, outcome_note{hop, &ok, nullptr, t0, 1});
    }
    void defer(stored_message& m, std::uint32_t i, std::uint64_t at_us) {
        const next_hop_ref hop{"mx.example.net", "192.0.2.1:25", "", ""};
        ++m.attempts[i];
        _store->defer(m, i, at_us, outcome_note{hop, nullptr, "451 try later", t0, 1});
    }
    // Turns of the loop with a compactor tick each (bounded), until `done` or the compactor
    // has nothing to do.
    void compact() {
        for (int i = 0; i < 200; ++i) {
            _compactor->tick(static_cast<std::int64_t>(1'000'000 + i * 20'000));  // past any back-off
            ASSERT_TRUE(_reactor.run_once(1));
        }
        ASSERT_TRUE(_compactor->idle());
    }
    std::vector<std::string> segment_files() {
        std::vector<std::string> out;
        for (const auto& e : std::filesystem::directory_iterator(_dir + "/shard-0"))
            if (e.path().extension() == ".seg") out.push_back(e.path().filename());
        std::sort(out.begin(), out.end());
        return out;
    }
    // Fills several segments; every message but `keep` (one recipient deferred, one
    // delivered) is delivered and released.
    stored_message* fill_with_one_deferred(std::uint64_t keep) {
        stored_message* kept = nullptr;
        for (std::uint64_t id = 1; id <= 40; ++id) {
            stored_message* m = commit(id, id == keep ? 2 : 1);
            if (id == keep) {
                kept = m;
                continue;
            }
            deliver(*m, 0);
            _store->release_if_done(*m);
        }
        deliver(*kept, 0);
        defer(*kept, 1, t0 + 3'600'000'000);
        for (int i = 0; i < 20; ++i) EXPECT_TRUE(_reactor.run_once(1));
        return kept;
    }

    std::string _dir;
    core::reactor _reactor;
    std::unique_ptr<fault_storage> _storage;
    int _log_fd = -1;
    std::unique_ptr<core::log_writer> _log_writer;
    protocol::bounce_rules _rules;
    std::unique_ptr<delivery_log> _log;
    no_reports _reporter;
    std::unique_ptr<spool> _spool;
    std::unique_ptr<message_store> _store;
    std::unique_ptr<compactor> _compactor;
};

}  // namespace

TEST_F(CompactorTest, OneDeferredMessageNoLongerKeepsEverySegmentAfterIt) {
    stored_message* kept = fill_with_one_deferred(2);
    const std::uint64_t first = kept->segment;
    ASSERT_GE(segment_files().size(), 5u) << "40 messages of 3 KiB in 16 KiB segments";
    ASSERT_TRUE(_spool->compaction_candidate().has_value());
    compact();
    EXPECT_EQ(_compactor->counters().copied_messages, 1u);
    stored_message* m = _store->find(2);
    ASSERT_NE(m, nullptr);
    EXPECT_NE(m->segment, first) << "moved";
    EXPECT_EQ(m->segment, _spool->current_segment());
    EXPECT_EQ(segment_files().size(), 1u) << "only the current segment is left";
    EXPECT_FALSE(_spool->compaction_candidate().has_value());

    // A restart finds the copy with its states, its campaign, and its body byte-exact.
    close_spool();
    open_spool();
    stored_message* back = _store->find(2);
    ASSERT_NE(back, nullptr);
    EXPECT_EQ(_store->campaign_of(*back), "Camp-2") << "the copy keeps the campaign (issue 17)";
    EXPECT_EQ(back->status[0], recipient_status::delivered) << "not delivered twice";
    EXPECT_EQ(back->status[1], recipient_status::deferred);
    EXPECT_EQ(back->attempts[1], 1u);
    EXPECT_EQ(back->next_attempt_us, t0 + 3'600'000'000);
    EXPECT_EQ(_store->size(), 1u) << "nothing else comes back";
    EXPECT_FALSE(_store->need_body(*back));
    for (int i = 0; i < 1000 && back->body == nullptr; ++i) ASSERT_TRUE(_reactor.run_once(1));
    ASSERT_NE(back->body, nullptr) << "unreadable: " << back->body_unreadable;
    EXPECT_EQ(back->body->text, text_of(2));
}

TEST_F(CompactorTest, ACopyWinsOverTheOriginalStillThereAfterACrash) {
    stored_message* kept = fill_with_one_deferred(3);
    // The state of a crash right after the copy was committed: original and copy both on disk
    // (the original's segment is still held here, so it stays).
    const std::vector<recipient_state> states = message_store::states_of(*kept);
    waiter w;
    w.owner = _spool.get();
    const std::string text = text_of(3);
    _spool->append_copy(kept->envelope, kept->client, text, kept->arrival_us, states, &w);
    for (int i = 0; i < 20000 && w.results.empty(); ++i) ASSERT_TRUE(_reactor.run_once(1));
    ASSERT_EQ(w.results, (std::vector<commit_result>{commit_result::ok}));
    // An outcome after the copy applies to it.
    deliver(*kept, 1);
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(_reactor.run_once(1));
    close_spool();
    open_spool();
    EXPECT_EQ(_store->find(3), nullptr) << "both recipients delivered: nothing to resume";

    // And without the later outcome: the copy's states.
    close_spool();
    std::filesystem::remove_all(_dir + "/shard-0");
    open_spool();
    kept = fill_with_one_deferred(4);
    waiter w2;
    w2.owner = _spool.get();
    const std::string text4 = text_of(4);
    const std::vector<recipient_state> states4 = message_store::states_of(*kept);
    _spool->append_copy(kept->envelope, kept->client, text4, kept->arrival_us, states4, &w2);
    for (int i = 0; i < 20000 && w2.results.empty(); ++i) ASSERT_TRUE(_reactor.run_once(1));
    close_spool();
    open_spool();
    stored_message* back = _store->find(4);
    ASSERT_NE(back, nullptr);
    EXPECT_EQ(back->status[0], recipient_status::delivered);
    EXPECT_EQ(back->status[1], recipient_status::deferred);
    EXPECT_EQ(back->where.segment, _spool->current_segment() - 1) << "the copy's location, not the original's";
}

TEST_F(CompactorTest, ACommitThatFailsKeepsTheOldSegment) {
    stored_message* kept = fill_with_one_deferred(2);
    const std::uint64_t first = kept->segment;
    const std::size_t files = segment_files().size();
    _storage->fail_next_write(ENOSPC);
    _compactor->tick(1'000'000);
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(_reactor.run_once(1));
    ASSERT_TRUE(_compactor->idle());
    EXPECT_EQ(_compactor->counters().failed_rounds, 1u);
    EXPECT_EQ(_store->find(2)->segment, first) << "still where it was";
    EXPECT_EQ(segment_files().size(), files) << "nothing deleted";
    _compactor->tick(1'000'001);
    EXPECT_TRUE(_compactor->idle()) << "the next round waits";
    EXPECT_EQ(_compactor->counters().rounds, 1u);
    // Later it works.
    compact();
    EXPECT_EQ(_compactor->counters().copied_messages, 1u);
    EXPECT_EQ(segment_files().size(), 1u);
}

TEST_F(CompactorTest, ARecordThatCannotBeReadBackStaysWhereItIs) {
    stored_message* kept = fill_with_one_deferred(2);
    const std::uint64_t first = kept->segment;
    _storage->corrupt_next_reads(1);
    _compactor->tick(1'000'000);
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(_reactor.run_once(1));
    ASSERT_TRUE(_compactor->idle());
    EXPECT_EQ(_compactor->counters().read_errors, 1u);
    EXPECT_EQ(_compactor->counters().copied_messages, 0u);
    EXPECT_EQ(_store->find(2)->segment, first);
}

TEST_F(CompactorTest, NothingIsCopiedWhileTheSpoolIsMostlyLive) {
    for (std::uint64_t id = 1; id <= 20; ++id) {
        stored_message* m = commit(id);
        defer(*m, 0, t0 + 60'000'000);
    }
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(_reactor.run_once(1));
    EXPECT_FALSE(_spool->compaction_candidate().has_value());
    compact();
    EXPECT_EQ(_compactor->counters().rounds, 0u);
}

TEST_F(CompactorTest, ADrainedQueueLeavesOnlyTheCurrentSegment) {
    for (std::uint64_t id = 1; id <= 30; ++id) {
        stored_message* m = commit(id);
        deliver(*m, 0);
        _store->release_if_done(*m);
    }
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(_reactor.run_once(1));
    EXPECT_EQ(segment_files().size(), 1u);
}

// A segment mostly dead but only just closed is left alone (its live messages are probably on
// their first attempt: a draining queue is not copied); the same segment quiet_ms later is
// due. The rest of the spool is live, so only the quarter rule can pick it.
TEST_F(CompactorTest, AMostlyDeadSegmentIsCopiedOnlyOnceItHasBeenQuiet) {
    std::vector<stored_message*> all;
    for (std::uint64_t id = 1; id <= 16; ++id) all.push_back(commit(id));
    const std::uint64_t first = all.front()->segment;
    ASSERT_GT(_spool->current_segment(), first + 1) << "16 messages of 3 KiB fill more than two 16 KiB segments";
    bool kept_one = false;
    for (stored_message* m : all) {
        if (m->segment == first && kept_one) {
            deliver(*m, 0);
            _store->release_if_done(*m);
            continue;
        }
        if (m->segment == first) kept_one = true;
        defer(*m, 0, t0 + 3'600'000'000);
    }
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(_reactor.run_once(1));
    const std::int64_t now = core::monotonic_ms();
    EXPECT_FALSE(_spool->compaction_candidate(2, now).has_value()) << "closed just now";
    EXPECT_EQ(_spool->compaction_candidate(2, now + spool::quiet_ms), std::optional<std::uint64_t>(first));
}

// A message with a job out is not copied (the job carries the record's location); one that
// gets a job while its copy is being made keeps its old segment until that job is done, so
// the job can still read the record where it was.
TEST_F(CompactorTest, AJobOutKeepsTheRecordItWillReadWhereItIs) {
    stored_message* kept = fill_with_one_deferred(2);
    const std::uint64_t first = kept->segment;
    const std::string first_file = segment_file_name(first);
    ASSERT_TRUE(_spool->compaction_candidate().has_value());
    kept->jobs = 1;  // as delivery::schedule leaves it while the job waits for a connection
    compact();
    EXPECT_EQ(_compactor->counters().copied_messages, 0u) << "not copied while a job is out";
    EXPECT_EQ(kept->segment, first);
    kept->jobs = 0;

    // The job appears after the round chose the message: it is copied and moved, and its old
    // segment stays on disk until the job is done.
    _compactor->tick(100'000'000);  // past the back-off the empty rounds above set
    ASSERT_FALSE(_compactor->idle()) << "a round started";
    kept->jobs = 1;
    compact();
    EXPECT_EQ(_compactor->counters().copied_messages, 1u);
    EXPECT_EQ(kept->segment, _spool->current_segment());
    EXPECT_EQ(_store->pinned_segment(*kept), first);
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(_reactor.run_once(1));
    const auto files = segment_files();
    EXPECT_TRUE(std::find(files.begin(), files.end(), first_file) != files.end()) << "the job still reads it";
    kept->jobs = 0;
    _store->release_if_done(*kept);  // what the job's outcome does
    EXPECT_EQ(_store->pinned_segment(*kept), 0u);
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(_reactor.run_once(1));
    EXPECT_EQ(segment_files().size(), 1u) << "only the current segment is left";
}
