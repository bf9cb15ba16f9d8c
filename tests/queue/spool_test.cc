// Unit tests of queue/spool.h: group commit, acknowledgement only after fdatasync, every
// disk fault injected through the storage seam, and recovery of what a crash leaves.
#include "queue/spool.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "core/reactor.h"
#include "tests/queue/spool_fixture.h"

using namespace ringrelay;
using namespace ringrelay::queue;
using protocol::commit_result;

namespace {

using waiter = queue::testing::holding_waiter;

class SpoolTest : public queue::testing::spool_fixture<fault_storage> {
protected:
    SpoolTest() : spool_fixture("spool") {}

    protocol::envelope envelope(std::uint64_t id) {
        protocol::envelope env;
        env.queue_id = id;
        env.helo = "client.example";
        env.mail_from = "sender@example.org";
        env.rcpt_to = {"rcpt" + std::to_string(id) + "@example.net"};
        return env;
    }

    std::vector<std::uint64_t> recovered_ids() {
        auto r = recover_directory(_dir + "/shard-0");
        EXPECT_TRUE(r.has_value());
        std::vector<std::uint64_t> ids;
        for (const auto& m : r->messages) ids.push_back(m.queue_id);
        return ids;
    }
};

const std::string message = "Received: from x\r\n\tby y; date\r\nSubject: t\r\n\r\nhello\r\n";

}  // namespace

TEST_F(SpoolTest, GroupCommitCoversEveryMessageOfATurnWithOneSync) {
    auto s = open_spool();
    waiter w;
    w.owner = s.get();
    for (std::uint64_t id = 1; id <= 50; ++id) s->append(envelope(id), "127.0.0.1", message, 1, &w);
    run_until(w, 50);
    for (auto r : w.results) EXPECT_EQ(r, commit_result::ok);
    EXPECT_EQ(_storage->syncs(), 1u);
    EXPECT_EQ(s->stats().commits, 1u);
    EXPECT_EQ(recovered_ids().size(), 50u);
}

TEST_F(SpoolTest, FailedSyncIsNeverAcknowledged) {
    auto s = open_spool();
    waiter w;
    w.owner = s.get();
    _storage->fail_next_sync(EIO);
    s->append(envelope(1), "127.0.0.1", message, 1, &w);
    run_until(w, 1);
    EXPECT_EQ(w.results[0], commit_result::io_error);
    EXPECT_TRUE(recovered_ids().empty()) << "a message that was refused must not be recovered";
}

struct fault_case {
    const char* name;
    int err;
    bool at_sync;
    commit_result expected;
};

class SpoolFaultTest : public SpoolTest, public ::testing::WithParamInterface<fault_case> {};

TEST_P(SpoolFaultTest, FaultFailsOnlyItsBatchAndTheSpoolKeepsServing) {
    const fault_case& fc = GetParam();
    auto s = open_spool();
    waiter w;
    w.owner = s.get();
    s->append(envelope(1), "127.0.0.1", message, 1, &w);
    run_until(w, 1);
    if (fc.at_sync) {
        _storage->fail_next_sync(fc.err);
    } else {
        _storage->fail_next_write(fc.err);
    }
    s->append(envelope(2), "127.0.0.1", message, 1, &w);
    s->append(envelope(3), "127.0.0.1", message, 1, &w);
    run_until(w, 3);
    EXPECT_EQ(w.results[1], fc.expected);
    EXPECT_EQ(w.results[2], fc.expected);
    s->append(envelope(4), "127.0.0.1", message, 1, &w);
    run_until(w, 4);
    EXPECT_EQ(w.results[3], commit_result::ok);
    EXPECT_EQ(recovered_ids(), (std::vector<std::uint64_t>{1, 4}));
}

INSTANTIATE_TEST_SUITE_P(
    DiskFaults, SpoolFaultTest,
    ::testing::Values(fault_case{"EnospcOnWrite", ENOSPC, false, commit_result::no_space},
                      fault_case{"EdquotOnWrite", EDQUOT, false, commit_result::no_space},
                      fault_case{"EioOnWrite", EIO, false, commit_result::io_error},
                      fault_case{"EioOnSync", EIO, true, commit_result::io_error},
                      fault_case{"EnospcOnSync", ENOSPC, true, commit_result::no_space}),
    [](const auto& info) { return std::string(info.param.name); });

TEST_F(SpoolTest, ShortWriteIsCompletedNotAcknowledgedEarly) {
    auto s = open_spool();
    waiter w;
    w.owner = s.get();
    _storage->short_next_write(10);
    s->append(envelope(7), "127.0.0.1", message, 1, &w);
    run_until(w, 1);
    EXPECT_EQ(w.results[0], commit_result::ok);
    EXPECT_GE(_storage->writes(), 2u);
    EXPECT_EQ(recovered_ids(), (std::vector<std::uint64_t>{7}));
}

TEST_F(SpoolTest, FailedSegmentCreationReportsNoSpaceThenRecovers) {
    auto s = open_spool(1);  // every commit starts a new segment
    waiter w;
    w.owner = s.get();
    s->append(envelope(1), "127.0.0.1", message, 1, &w);
    run_until(w, 1);
    _storage->fail_next_create(ENOSPC);
    s->append(envelope(2), "127.0.0.1", message, 1, &w);
    run_until(w, 2);
    EXPECT_EQ(w.results[1], commit_result::no_space);
    EXPECT_FALSE(s->healthy());
    s->append(envelope(3), "127.0.0.1", message, 1, &w);
    run_until(w, 3);
    EXPECT_EQ(w.results[2], commit_result::ok);
    EXPECT_TRUE(s->healthy());
    EXPECT_EQ(recovered_ids(), (std::vector<std::uint64_t>{1, 3}));
}

TEST_F(SpoolTest, RollsSegmentsAndRecoversAcrossThem) {
    auto s = open_spool(1);  // every commit starts a new segment
    waiter w;
    w.owner = s.get();
    for (std::uint64_t id = 1; id <= 5; ++id) {
        s->append(envelope(id), "127.0.0.1", message, 1, &w);
        run_until(w, id);
    }
    std::size_t segments = 0;
    for (const auto& e : std::filesystem::directory_iterator(_dir + "/shard-0")) segments += e.path().extension() == ".seg";
    EXPECT_GE(segments, 5u);
    EXPECT_EQ(recovered_ids(), (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
}

TEST_F(SpoolTest, RecoverySkipsCorruptAndTornRecordsAndKeepsTheRest) {
    {
        auto s = open_spool();
        waiter w;
        w.owner = s.get();
        for (std::uint64_t id = 1; id <= 3; ++id) s->append(envelope(id), "127.0.0.1", message, 1, &w);
        run_until(w, 3);
    }
    const std::string seg = _dir + "/shard-0/0000000001.seg";
    std::string bytes;
    {
        std::ifstream in(seg, std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    const std::size_t head = 2 * (record_header_size + segment_payload_size);  // the segment records
    const std::size_t record = (bytes.size() - head) / 3;
    bytes[head + record + record / 2] ^= 0x01;   // damage the middle of record 2
    bytes += bytes.substr(head, record / 2);     // and a torn record at the tail
    {
        std::ofstream out(seg, std::ios::binary | std::ios::trunc);
        out << bytes;
    }
    auto r = recover_directory(_dir + "/shard-0");
    ASSERT_TRUE(r.has_value());
    ASSERT_EQ(r->messages.size(), 2u);
    EXPECT_EQ(r->messages[0].queue_id, 1u);
    EXPECT_EQ(r->messages[1].queue_id, 3u);
    ASSERT_EQ(r->problems.size(), 2u);
    EXPECT_NE(r->problems[0].find("checksum"), std::string::npos) << r->problems[0];
    EXPECT_NE(r->problems[1].find("truncated"), std::string::npos) << r->problems[1];
    // A restarted spool starts a new segment and keeps the old one readable.
    auto s2 = open_spool();
    s2->hold_segment(1);  // what the delivery scheduler does for unfinished recovered messages
    waiter w;
    w.owner = s2.get();
    s2->append(envelope(9), "127.0.0.1", message, 1, &w);
    run_until(w, 1);
    EXPECT_EQ(recovered_ids(), (std::vector<std::uint64_t>{1, 3, 9}));
}

TEST_F(SpoolTest, FinishedSegmentsAreDeletedOldestFirst) {
    auto s = open_spool(1);  // every commit starts a new segment
    waiter w;
    w.owner = s.get();
    for (std::uint64_t id = 1; id <= 3; ++id) {
        s->append(envelope(id), "127.0.0.1", message, 1, &w);
        run_until(w, id);
    }
    auto count = [&] {
        std::size_t n = 0;
        for (const auto& e : std::filesystem::directory_iterator(_dir + "/shard-0")) n += e.path().extension() == ".seg";
        return n;
    };
    const std::size_t before = count();
    // Finishing the message of segment 2 deletes nothing while segment 1 is still needed...
    s->release_segment(2);
    ASSERT_TRUE(_reactor.run_once(0));
    EXPECT_EQ(count(), before);
    // ...and finishing segment 1's then deletes both, oldest first.
    s->release_segment(1);
    ASSERT_TRUE(_reactor.run_once(0));
    EXPECT_EQ(count(), before - 2);
    EXPECT_EQ(recovered_ids(), (std::vector<std::uint64_t>{3}));
}

TEST_F(SpoolTest, MissingDirectoryIsAnEmptySpool) {
    auto r = recover_directory(_dir + "/does-not-exist");
    ASSERT_TRUE(r.has_value());
    EXPECT_TRUE(r->messages.empty());
}

// SECURITY: after a damaged record, recovery resynchronises on the next record magic, which a
// client can plant inside a message body (BDAT takes any bytes). A record forged there
// without the segment's secret salt must not be recovered as a message.
TEST_F(SpoolTest, RecordForgedInsideABodyIsNotRecoveredAfterDamage) {
    protocol::envelope forged_env = envelope(666);
    forged_env.rcpt_to = {"victim@example.net"};
    std::string forged;
    const std::string forged_body = "Subject: forged\r\n\r\nnot from this relay\r\n";
    encode_message_record(forged, forged_env, "6.6.6.6", 1, forged_body, 0);  // the salt is unknown: 0
    forged += forged_body;
    const std::string body = "Subject: carrier\r\n\r\n" + forged + "\r\n";
    {
        auto s = open_spool();
        waiter w;
        w.owner = s.get();
        s->append(envelope(1), "127.0.0.1", body, 1, &w);
        s->append(envelope(2), "127.0.0.1", message, 1, &w);
        run_until(w, 2);
    }
    // The resynchronisation is the scan's: a segment without an index, as the one being
    // written at a crash (the spool closed cleanly here, and indexed it).
    ASSERT_TRUE(std::filesystem::remove(_dir + "/shard-0/0000000001.idx"));
    const std::string seg = _dir + "/shard-0/0000000001.seg";
    std::string bytes;
    {
        std::ifstream in(seg, std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    const std::size_t head = 2 * (record_header_size + segment_payload_size);
    bytes[head + 20] ^= 0x40;  // damage the carrier's header: recovery must resync
    {
        std::ofstream out(seg, std::ios::binary | std::ios::trunc);
        out << bytes;
    }
    auto r = recover_directory(_dir + "/shard-0");
    ASSERT_TRUE(r.has_value());
    std::vector<std::uint64_t> ids;
    for (const auto& m : r->messages) ids.push_back(m.queue_id);
    EXPECT_EQ(ids, (std::vector<std::uint64_t>{2})) << "the forged record inside the body was accepted";
    EXPECT_FALSE(r->problems.empty());
}

TEST_F(SpoolTest, OneDamagedSegmentRecordCopyIsSurvivedBothAreNot) {
    {
        auto s = open_spool();
        waiter w;
        w.owner = s.get();
        s->append(envelope(1), "127.0.0.1", message, 1, &w);
        run_until(w, 1);
    }
    const std::string seg = _dir + "/shard-0/0000000001.seg";
    std::string bytes;
    {
        std::ifstream in(seg, std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    auto write = [&](const std::string& b) {
        std::ofstream out(seg, std::ios::binary | std::ios::trunc);
        out << b;
    };
    const std::size_t copy = record_header_size + segment_payload_size;
    for (const std::size_t at : {record_header_size, copy + record_header_size}) {  // each copy's salt
        std::string damaged = bytes;
        damaged[at] ^= 0x01;
        write(damaged);
        auto r = recover_directory(_dir + "/shard-0");
        ASSERT_TRUE(r.has_value());
        ASSERT_EQ(r->messages.size(), 1u) << "damage at " << at;
        ASSERT_EQ(r->problems.size(), 1u);
        EXPECT_NE(r->problems[0].find("damaged; using the other"), std::string::npos) << r->problems[0];
    }
    std::string both = bytes;
    both[record_header_size] ^= 0x01;
    both[copy + record_header_size] ^= 0x01;
    write(both);
    auto r = recover_directory(_dir + "/shard-0");
    ASSERT_TRUE(r.has_value());
    EXPECT_TRUE(r->messages.empty());
    ASSERT_EQ(r->problems.size(), 1u);
    EXPECT_NE(r->problems[0].find("no valid segment record"), std::string::npos) << r->problems[0];
}

// The AUTH user is stored with the message (version 2 records, issue 16) and comes back at
// recovery, beside messages without one (version 1, as every older spool holds them).
TEST_F(SpoolTest, AuthUserSurvivesRecoveryBesideMessagesWithout) {
    {
        auto s = open_spool();
        waiter w;
        w.owner = s.get();
        protocol::envelope with = envelope(1);
        with.auth_user = "alice";
        s->append(with, "127.0.0.1", message, 1, &w);
        s->append(envelope(2), "127.0.0.1", message, 1, &w);
        run_until(w, 2);
    }
    struct collect final : record_visitor {
        std::vector<std::pair<std::uint64_t, std::string>> seen;
        void on_record(std::uint64_t, const decoded_message& r) override {
            if (r.header.type == record_type::message) seen.emplace_back(r.header.queue_id, r.envelope.auth_user);
        }
    } visitor;
    auto r = recover_directory(_dir + "/shard-0", &visitor);
    ASSERT_TRUE(r.has_value());
    EXPECT_TRUE(r->problems.empty());
    EXPECT_EQ(visitor.seen, (std::vector<std::pair<std::uint64_t, std::string>>{{1, "alice"}, {2, ""}}));
}

// A suppression record has its own journal; one found in a segment is reported and skipped.
TEST_F(SpoolTest, ASuppressionRecordInASegmentIsSkipped) {
    {
        auto s = open_spool();
        waiter w;
        w.owner = s.get();
        s->append(envelope(1), "127.0.0.1", message, 1, &w);
        run_until(w, 1);
    }
    // Append one to the segment with its salt (read from its segment record).
    std::string seg;
    for (const auto& e : std::filesystem::directory_iterator(_dir + "/shard-0")) seg = e.path();
    std::ifstream in(seg, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), {});
    auto head = decode_record(bytes, 0);
    ASSERT_TRUE(head.has_value());
    std::string extra;
    encode_suppression_record(extra, "t", "a@x", suppression_source::hard_bounce, 0, 1, head->salt);
    std::ofstream(seg, std::ios::binary | std::ios::app) << extra;
    auto r = recover_directory(_dir + "/shard-0");
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->messages.size(), 1u);
    ASSERT_EQ(r->problems.size(), 1u);
    EXPECT_NE(r->problems[0].find("a suppression record; skipped"), std::string::npos) << r->problems[0];
}
