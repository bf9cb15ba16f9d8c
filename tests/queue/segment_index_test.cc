// Unit tests of queue/segment_index.h and its use by the spool (issue 15, "Recovery by
// descriptor"): a closed segment gets an index; recovery from the indexes makes exactly the
// visitor calls a scan of the same segments makes; a torn, damaged, stale or foreign index
// (or a segment changed after its index) is refused and the segment scanned instead.
#include "queue/segment_index.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "core/reactor.h"
#include "queue/segment_index_writer.h"
#include "queue/spool.h"
#include "tests/queue/spool_fixture.h"

using namespace ringrelay;
using namespace ringrelay::queue;
using protocol::commit_result;

namespace {

using waiter = queue::testing::holding_waiter;

// One visitor call, every field a recovery visitor may read, as text; the message bytes only
// by their size (a scan has them, an index does not).
std::string describe_call(std::uint64_t segment, const decoded_message& r) {
    std::ostringstream o;
    o << "seg=" << segment << " type=" << int(r.header.type) << " v=" << int(r.header.version)
      << " len=" << r.header.payload_length << " crc=" << r.header.crc << " id=" << r.header.queue_id
      << " t=" << r.header.received_us << " size=" << r.record_size << " off=" << r.offset << " salt=" << r.segment_salt
      << " msg=" << r.message_size << " rcpt_index=" << r.rcpt_index << " status=" << int(r.status)
      << " attempts=" << r.attempts << " next=" << r.next_attempt_us << " helo=" << r.envelope.helo
      << " from=" << r.envelope.mail_from << " auth=" << r.envelope.auth_user << " body=" << int(r.envelope.body)
      << " utf8=" << r.envelope.smtputf8 << " qid=" << r.envelope.queue_id << " client=" << r.client << " rcpts=";
    for (const auto& x : r.envelope.rcpt_to) o << x << ",";
    o << " states=";
    for (const auto& st : r.states) o << int(st.status) << "/" << st.attempts << "/" << st.next_attempt_us << ",";
    return o.str();
}

struct recorder final : record_visitor {
    std::vector<std::string> calls;
    std::size_t with_body = 0;  // message records whose bytes came along (a scan)
    void on_record(std::uint64_t segment, const decoded_message& r) override {
        calls.push_back(describe_call(segment, r));
        if (r.header.type == record_type::message || r.header.type == record_type::message_copy) {
            if (!r.message.empty()) ++with_body;
            EXPECT_TRUE(r.message.empty() || r.message.size() == r.message_size);
        }
    }
};

// Joins pieces (GCC 12's -Wrestrict misfires on "literal" + std::string at -O3).
std::string cat(std::initializer_list<std::string_view> parts) {
    std::string out;
    for (const std::string_view p : parts) out.append(p);
    return out;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
}

void write_file(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << bytes;
}

class SegmentIndexTest : public queue::testing::spool_fixture<disk_storage> {
protected:
    SegmentIndexTest() : spool_fixture("index") {}

    void run_until_idle(const spool& s) {
        for (int i = 0; i < 1000 && !s.idle(); ++i) ASSERT_TRUE(_reactor.run_once(100));
        ASSERT_TRUE(s.idle());
    }

    // Messages 1, 2 and 3, each committed before the next is appended (in a spool opened with
    // segment limit 1, each in a segment of its own); then runs until the spool is idle.
    void append_one_per_commit(spool& s) {
        waiter w;
        w.owner = &s;
        _bodies.emplace_back("Subject: x\r\n\r\nhello\r\n");
        protocol::envelope env;
        env.helo = "h";
        env.mail_from = "a@example.org";
        env.rcpt_to = {"b@example.net"};
        for (std::uint64_t id = 1; id <= 3; ++id) {
            env.queue_id = id;
            s.append(env, "127.0.0.1", _bodies.back(), 1, &w);
            run_until(w, id);
        }
        run_until_idle(s);
    }

    // A spool of several segments (a small limit) holding messages of every shape the relay
    // writes (an AUTH user, many recipients, 8BITMIME and SMTPUTF8, an empty body, a body of
    // 100 KiB), outcome records and compaction copies, then closed cleanly (which indexes the
    // last segment too).
    void fill(std::uint64_t segment_limit = 8192) {
        auto s = open_spool(segment_limit);
        waiter w;
        w.owner = s.get();
        std::size_t n = 0;
        for (std::uint64_t id = 1; id <= 40; ++id) {
            protocol::envelope env;
            env.queue_id = id << 8;
            const std::string n_text = std::to_string(id);
            env.helo = cat({"client", n_text, ".example"});
            env.mail_from = id % 7 == 0 ? std::string() : cat({"sender", n_text, "@example.org"});
            for (std::uint64_t r = 0; r <= id % 4; ++r) env.rcpt_to.push_back(cat({"r", std::to_string(r), "@example.net"}));
            if (id % 3 == 0) env.auth_user = cat({"tenant", n_text});
            env.body = id % 5 == 0 ? protocol::body_type::eight_bit_mime : protocol::body_type::seven_bit;
            env.smtputf8 = id % 6 == 0;
            std::string body;
            if (id == 23) {
                body.assign(100 * 1024, 'b');
            } else if (id != 11) {
                body.append("Subject: ").append(std::to_string(id)).append("\r\n\r\n");
                body.append(id * 37, 'x').append("\r\n");
            }
            _bodies.push_back(std::move(body));
            s->append(env, cat({"192.0.2.", n_text}), _bodies.back(), 1000 + id, &w);
            if (id % 4 == 0) {
                s->append_outcome((id - 2) << 8, 0, recipient_status::deferred, 2, 5000 + id);
                s->append_outcome((id - 3) << 8, 0, recipient_status::delivered, 1, 0);
            }
            if (id % 10 == 0) {
                // A compaction's copy of an earlier message (record type 5, whole in the
                // spool's arena), with its recipients' states.
                protocol::envelope copy = env;
                copy.queue_id = (id - 5) << 8;
                std::vector<recipient_state> states(copy.rcpt_to.size(),
                                                    recipient_state{recipient_status::deferred, 3, 7000 + id});
                states[0].status = recipient_status::delivered;
                s->append_copy(copy, "192.0.2.200", _bodies.back(), 900 + id, states, &w);
                ++n;
            }
            ++n;
            if (id % 3 == 0) run_until(w, n);  // batches of one to three messages
        }
        run_until(w, n);
        run_until_idle(*s);
    }

    std::vector<std::uint64_t> files(const char* ext) {
        std::vector<std::uint64_t> out;
        for (const auto& e : std::filesystem::directory_iterator(_shard)) {
            const std::string name = e.path().filename();
            if (e.path().extension() == ext)
                out.push_back(std::string(ext) == ".seg" ? parse_segment_file_name(name) : parse_index_file_name(name));
        }
        std::sort(out.begin(), out.end());
        return out;
    }

    struct recovery {
        recorder calls;
        recovery_report report;
    };
    recovery recover() {
        recovery r;
        auto rep = recover_directory(_shard, &r.calls);
        EXPECT_TRUE(rep.has_value());
        if (rep) r.report = std::move(*rep);
        return r;
    }
    // The reference: every segment scanned (the index files moved away and back).
    recovery scan() {
        const std::string aside = _dir + "/aside";
        std::filesystem::create_directories(aside);
        for (const std::uint64_t n : files(".idx"))
            std::filesystem::rename(_shard + "/" + index_file_name(n), aside + "/" + index_file_name(n));
        recovery r = recover();
        EXPECT_EQ(r.report.indexed_segments, 0u);
        for (const auto& e : std::filesystem::directory_iterator(aside))
            std::filesystem::rename(e.path(), _shard + "/" + e.path().filename().string());
        return r;
    }
};

void expect_same_listing(const recovery_report& a, const recovery_report& b) {
    ASSERT_EQ(a.messages.size(), b.messages.size());
    for (std::size_t i = 0; i < a.messages.size(); ++i) {
        EXPECT_EQ(a.messages[i].queue_id, b.messages[i].queue_id);
        EXPECT_EQ(a.messages[i].segment, b.messages[i].segment);
        EXPECT_EQ(a.messages[i].offset, b.messages[i].offset);
        EXPECT_EQ(a.messages[i].received_us, b.messages[i].received_us);
        EXPECT_EQ(a.messages[i].mail_from, b.messages[i].mail_from);
        EXPECT_EQ(a.messages[i].recipients, b.messages[i].recipients);
        EXPECT_EQ(a.messages[i].size, b.messages[i].size);
    }
    EXPECT_EQ(a.max_queue_id, b.max_queue_id);
    EXPECT_EQ(a.max_segment, b.max_segment);
    EXPECT_EQ(a.segments, b.segments);
}

}  // namespace

TEST_F(SegmentIndexTest, EveryClosedSegmentHasAnIndexAndRecoveryFromThemEqualsAScan) {
    fill();
    const auto segments = files(".seg");
    ASSERT_GE(segments.size(), 4u) << "the test needs several segments";
    EXPECT_EQ(files(".idx"), segments) << "rotation and the clean close index every segment";
    const recovery indexed = recover();
    EXPECT_EQ(indexed.report.indexed_segments, segments.size());
    EXPECT_EQ(indexed.calls.with_body, 0u) << "recovery from indexes must not read bodies";
    EXPECT_TRUE(indexed.report.problems.empty());
    EXPECT_TRUE(indexed.report.index_problems.empty());
    const recovery scanned = scan();
    EXPECT_GT(scanned.calls.with_body, 0u);
    ASSERT_EQ(indexed.calls.calls.size(), scanned.calls.calls.size());
    EXPECT_EQ(indexed.calls.calls.size(), 40u + 20u + 4u);  // 40 messages, 20 outcomes, 4 copies
    for (std::size_t i = 0; i < scanned.calls.calls.size(); ++i)
        EXPECT_EQ(indexed.calls.calls[i], scanned.calls.calls[i]) << "call " << i;
    expect_same_listing(indexed.report, scanned.report);
}

// The index of a segment closed by rotation is written while the spool runs (io_uring), not
// only when the spool closes.
TEST_F(SegmentIndexTest, RotationWritesTheClosedSegmentsIndexWhileRunning) {
    auto s = open_spool(1);  // every commit starts a new segment
    append_one_per_commit(*s);
    EXPECT_EQ(files(".idx"), (std::vector<std::uint64_t>{1, 2}));  // the current one (3) has none yet
    EXPECT_EQ(s->index_stats().written, 2u);
    EXPECT_EQ(s->index_stats().failed, 0u);
    const recovery r = recover();
    EXPECT_EQ(r.report.indexed_segments, 2u);
    EXPECT_EQ(r.calls.calls.size(), 3u);
    EXPECT_EQ(r.calls.with_body, 1u) << "segment 3 (no index, as after a crash) is scanned";
}

TEST_F(SegmentIndexTest, DeletingASegmentDeletesItsIndex) {
    auto s = open_spool(1);
    append_one_per_commit(*s);
    ASSERT_EQ(files(".idx"), (std::vector<std::uint64_t>{1, 2}));
    s->release_segment(1);
    ASSERT_TRUE(_reactor.run_once(0));
    EXPECT_EQ(files(".seg"), (std::vector<std::uint64_t>{2, 3}));
    EXPECT_EQ(files(".idx"), (std::vector<std::uint64_t>{2}));
}

TEST_F(SegmentIndexTest, AStrayIndexIsRemovedAtOpen) {
    fill();
    write_file(_shard + "/" + index_file_name(999), read_file(_shard + "/" + index_file_name(1)));
    ASSERT_EQ(recover().report.stray_indexes, (std::vector<std::uint64_t>{999}));
    auto s = open_spool(8192);
    EXPECT_FALSE(std::filesystem::exists(_shard + "/" + index_file_name(999)));
}

// An index larger than a piece is written out as the segment fills (its part file grows),
// not held whole in memory until rotation; rotation and the clean close complete it, and the
// part file left by a stop without a clean close is removed by the next start, which indexes
// that segment from a scan. Recovery from the completed indexes equals a scan.
TEST_F(SegmentIndexTest, AnIndexIsWrittenInPiecesAsItsSegmentFills) {
    auto s = open_spool(512 * 1024);
    waiter w;
    w.owner = s.get();
    _bodies.emplace_back("Subject: p\r\n\r\n" + std::string(100, 'p') + "\r\n");
    protocol::envelope env;
    env.helo = "pieces.example";
    env.mail_from = "sender@example.org";
    env.rcpt_to = {"first-recipient@example.net", "second-recipient@example.net"};
    std::size_t n = 0;
    const std::string part = _shard + "/" + index_part_file_name(1);
    bool part_seen = false;
    while (files(".seg").size() < 3) {
        for (int i = 0; i < 250; ++i) {
            env.queue_id = ++n;
            s->append(env, "127.0.0.1", _bodies.back(), n, &w);
        }
        run_until(w, n);
        ASSERT_LT(n, 20000u) << "the segments never rotated";
        if (files(".seg").size() == 1) {
            run_until_idle(*s);
            // Segment 1's index grows in its part file, a piece at a time.
            ASSERT_TRUE(files(".idx").empty());
            if (std::filesystem::exists(part)) {
                part_seen = true;
                EXPECT_GE(std::filesystem::file_size(part), index_piece_size);
            }
        }
    }
    run_until_idle(*s);
    EXPECT_TRUE(part_seen) << "segment 1's index was written out only at rotation";
    // Segment 1's index was more than one piece, and rotation completed it.
    EXPECT_GT(std::filesystem::file_size(_shard + "/" + index_file_name(1)), 2 * index_piece_size);
    EXPECT_FALSE(std::filesystem::exists(part));
    EXPECT_EQ(files(".idx"), (std::vector<std::uint64_t>{1, 2}));
    const std::string current_part = _shard + "/" + index_part_file_name(3);

    // A stop without a clean close, as a copy of the directory now: segment 3 has a part file,
    // no index; the next start removes the part, scans segment 3 and indexes it.
    for (int i = 0; i < 1000 / 250; ++i) {
        for (int j = 0; j < 250; ++j) {
            env.queue_id = ++n;
            s->append(env, "127.0.0.1", _bodies.back(), n, &w);
        }
        run_until(w, n);
    }
    run_until_idle(*s);
    ASSERT_EQ(files(".seg").size(), 3u) << "segment 3 must still be the current one";
    ASSERT_TRUE(std::filesystem::exists(current_part));
    EXPECT_GE(std::filesystem::file_size(current_part), index_piece_size);
    const std::string crashed = _dir + "/crashed";
    std::filesystem::copy(_shard, crashed);
    {
        const auto report = recover_directory(crashed, nullptr);
        ASSERT_TRUE(report.has_value());
        EXPECT_EQ(report->indexed_segments, 2u);
        EXPECT_TRUE(report->index_problems.empty()) << "a part file is no index: no problem to report";
        EXPECT_EQ(report->index_parts, (std::vector<std::uint64_t>{3}));
        spool_ptr reopened(new spool(_reactor, *_storage, crashed, 512 * 1024), unhook{&_reactor});
        auto opened = reopened->open();
        ASSERT_TRUE(opened.has_value());
        EXPECT_EQ(opened->written_indexes, 1u);
    }
    EXPECT_FALSE(std::filesystem::exists(crashed + "/" + index_part_file_name(3)));
    EXPECT_TRUE(std::filesystem::exists(crashed + "/" + index_file_name(3)));

    // The clean close completes segment 3's index from its part file and the last bytes.
    s.reset();
    EXPECT_FALSE(std::filesystem::exists(current_part));
    EXPECT_TRUE(read_file(_shard + "/" + index_file_name(3)) == read_file(crashed + "/" + index_file_name(3)))
        << "the pieces and the last bytes are the index a scan builds";
    const recovery indexed = recover();
    EXPECT_EQ(indexed.report.indexed_segments, 3u);
    EXPECT_TRUE(indexed.report.index_problems.empty());
    EXPECT_EQ(indexed.calls.with_body, 0u);
    const recovery scanned = scan();
    EXPECT_EQ(indexed.calls.calls, scanned.calls.calls);
    EXPECT_EQ(indexed.calls.calls.size(), n);
}

// A segment deleted while a piece of its index is in flight (or waiting) leaves no index file
// and no part file behind; the next index is written whole.
TEST_F(SegmentIndexTest, AForgottenIndexLeavesNoFile) {
    std::filesystem::create_directories(_shard);
    segment_index_writer writer(_reactor, _shard);
    writer.append(5, std::string(1000, 'a'), index_piece::more);
    writer.append(5, std::string(1000, 'b'), index_piece::more);
    EXPECT_TRUE(std::filesystem::exists(_shard + "/" + index_part_file_name(5))) << "the first piece is in flight";
    writer.forget(5);
    writer.append(6, std::string(3000, 'c'), index_piece::more);
    writer.append(6, "end", index_piece::last);
    for (int i = 0; i < 100 && !writer.idle(); ++i) ASSERT_TRUE(_reactor.run_once(100));
    ASSERT_TRUE(writer.idle());
    EXPECT_FALSE(std::filesystem::exists(_shard + "/" + index_part_file_name(5)));
    EXPECT_FALSE(std::filesystem::exists(_shard + "/" + index_file_name(5)));
    EXPECT_FALSE(std::filesystem::exists(_shard + "/" + index_part_file_name(6)));
    EXPECT_EQ(read_file(_shard + "/" + index_file_name(6)), std::string(3000, 'c') + "end");
    EXPECT_EQ(writer.stats().written, 1u);
    EXPECT_EQ(writer.stats().failed, 0u);
    EXPECT_EQ(writer.spare().capacity() >= 3000, true) << "a written piece's buffer is kept for the next one";
    // An index the builder found unusable (an empty last piece): its part file goes, uncounted.
    writer.append(7, std::string(500, 'd'), index_piece::more);
    writer.append(7, std::string(), index_piece::last);
    for (int i = 0; i < 100 && !writer.idle(); ++i) ASSERT_TRUE(_reactor.run_once(100));
    EXPECT_FALSE(std::filesystem::exists(_shard + "/" + index_part_file_name(7)));
    EXPECT_FALSE(std::filesystem::exists(_shard + "/" + index_file_name(7)));
    EXPECT_EQ(writer.stats().written, 1u);
    EXPECT_EQ(writer.stats().failed, 0u);
}

// The shard's recovery keeps no list of every message (a million would be a large vector);
// --list-spool's does, and both find the highest queue id.
TEST_F(SegmentIndexTest, ShardRecoveryDoesNotListMessages) {
    fill();
    recorder calls;
    auto quiet = recover_directory(_shard, &calls, recovery_listing::none);
    auto listed = recover_directory(_shard, nullptr, recovery_listing::messages);
    ASSERT_TRUE(quiet && listed);
    EXPECT_TRUE(quiet->messages.empty());
    EXPECT_EQ(listed->messages.size(), 44u);  // the 4 copies too
    EXPECT_EQ(quiet->max_queue_id, 40u << 8);
    EXPECT_EQ(listed->max_queue_id, 40u << 8);
}

// A segment without a usable index (the one being written at a crash, one whose index was torn)
// is scanned once: the start that scanned it writes its index, the same bytes rotation writes,
// so the next start reads it from there. A segment whose scan met a damaged record gets none.
TEST_F(SegmentIndexTest, AScannedSegmentGetsItsIndexAtOpen) {
    fill();
    const auto segments = files(".seg");
    ASSERT_GE(segments.size(), 4u);
    const std::string first = _shard + "/" + index_file_name(segments.front());
    const std::string last = _shard + "/" + index_file_name(segments.back());
    const std::string first_bytes = read_file(first);
    const std::string last_bytes = read_file(last);
    std::filesystem::remove(last);                              // as after a crash
    write_file(first, first_bytes.substr(0, first_bytes.size() / 2));  // torn
    const recovery reference = scan();
    ASSERT_EQ(recover().report.indexed_segments, segments.size() - 2);
    {
        spool_ptr s(new spool(_reactor, *_storage, _shard, 8192), unhook{&_reactor});
        auto report = s->open();
        ASSERT_TRUE(report.has_value());
        EXPECT_EQ(report->written_indexes, 2u);
        EXPECT_TRUE(report->built_indexes.empty()) << "handed over, not kept";
    }
    EXPECT_EQ(read_file(last), last_bytes);
    EXPECT_EQ(read_file(first), first_bytes);
    const recovery again = recover();
    // All but the segment that start made (segment records only: nothing to index).
    EXPECT_EQ(files(".seg").size(), segments.size() + 1);
    EXPECT_EQ(again.report.indexed_segments, segments.size());
    EXPECT_EQ(again.calls.calls, reference.calls.calls);

    // A damaged record in a segment: scanned (the damage reported), never indexed.
    std::filesystem::remove(last);
    std::string seg = read_file(_shard + "/" + segment_file_name(segments.back()));
    seg[seg.size() - 3] ^= 0x20;
    write_file(_shard + "/" + segment_file_name(segments.back()), seg);
    {
        spool_ptr s(new spool(_reactor, *_storage, _shard, 8192), unhook{&_reactor});
        auto report = s->open();
        ASSERT_TRUE(report.has_value());
        EXPECT_EQ(report->written_indexes, 0u);
        EXPECT_FALSE(report->problems.empty());
    }
    EXPECT_FALSE(std::filesystem::exists(last));
}

// Every way an index can be wrong: the segment is scanned instead, and the visitor sees what
// a scan of everything sees.
TEST_F(SegmentIndexTest, ATornIndexIsRefusedAtEveryLength) {
    fill();
    const recovery reference = scan();
    const std::string idx = _shard + "/" + index_file_name(2);
    const std::string whole = read_file(idx);
    ASSERT_GT(whole.size(), 100u);
    const std::size_t segments = files(".seg").size();
    for (std::size_t len = 0; len < whole.size(); len += (len < 64 || len + 64 > whole.size()) ? 1 : 13) {
        write_file(idx, whole.substr(0, len));
        const recovery r = recover();
        ASSERT_EQ(r.report.indexed_segments, segments - 1) << "length " << len;
        ASSERT_EQ(r.calls.calls, reference.calls.calls) << "length " << len;
        ASSERT_EQ(r.report.index_problems.size(), 1u);
    }
    write_file(idx, whole);
    EXPECT_EQ(recover().report.indexed_segments, segments) << "the whole index is used again";
}

TEST_F(SegmentIndexTest, AnyDamagedByteOfAnIndexIsRefused) {
    fill();
    const recovery reference = scan();
    const std::string idx = _shard + "/" + index_file_name(1);
    const std::string whole = read_file(idx);
    const std::size_t segments = files(".seg").size();
    for (std::size_t at = 0; at < whole.size(); ++at) {
        std::string damaged = whole;
        damaged[at] = static_cast<char>(damaged[at] ^ (1 << (at % 8)));
        write_file(idx, damaged);
        const recovery r = recover();
        ASSERT_EQ(r.report.indexed_segments, segments - 1) << "byte " << at;
        ASSERT_EQ(r.calls.calls, reference.calls.calls) << "byte " << at;
    }
}

TEST_F(SegmentIndexTest, AnIndexOfAnotherSegmentIsRefused) {
    fill();
    const recovery reference = scan();
    const std::size_t segments = files(".seg").size();
    // Segment 1's index given to segment 2 (same spool, same salt).
    write_file(_shard + "/" + index_file_name(2), read_file(_shard + "/" + index_file_name(1)));
    const recovery r = recover();
    EXPECT_EQ(r.report.indexed_segments, segments - 1);
    EXPECT_EQ(r.calls.calls, reference.calls.calls);
    ASSERT_EQ(r.report.index_problems.size(), 1u);
    EXPECT_NE(r.report.index_problems[0].find("0000000002.idx"), std::string::npos) << r.report.index_problems[0];
}

TEST_F(SegmentIndexTest, AnIndexFromAnotherSpoolInstanceIsRefused) {
    // Two spools with the same messages: same segment numbers and lengths, other salts.
    fill();
    const std::string first = _shard;
    const std::string other_index = read_file(first + "/" + index_file_name(1));
    std::filesystem::rename(first, _dir + "/first");
    fill();
    const recovery reference = scan();
    ASSERT_EQ(std::filesystem::file_size(_shard + "/" + segment_file_name(1)),
              std::filesystem::file_size(_dir + "/first/" + segment_file_name(1)));
    write_file(_shard + "/" + index_file_name(1), other_index);
    const recovery r = recover();
    EXPECT_EQ(r.report.indexed_segments, files(".seg").size() - 1);
    EXPECT_EQ(r.calls.calls, reference.calls.calls);
    ASSERT_EQ(r.report.index_problems.size(), 1u);
    EXPECT_NE(r.report.index_problems[0].find("checksum"), std::string::npos) << r.report.index_problems[0];
}

TEST_F(SegmentIndexTest, ASegmentTruncatedOrExtendedAfterItsIndexIsScanned) {
    fill();
    const std::string seg = _shard + "/" + segment_file_name(1);
    const std::string whole = read_file(seg);
    // Cut the segment's last record exactly at its start: a valid, shorter segment.
    auto entries = parse_segment_index(read_file(_shard + "/" + index_file_name(1)),
                                       index_expectation{1, decode_record(whole, 0)->salt, whole.size()});
    ASSERT_TRUE(entries.has_value());
    ASSERT_GE(entries->size(), 2u);
    write_file(seg, whole.substr(0, entries->back().offset));
    const recovery reference = scan();
    recovery r = recover();
    EXPECT_EQ(r.report.indexed_segments, files(".seg").size() - 1);
    EXPECT_EQ(r.calls.calls, reference.calls.calls);
    ASSERT_EQ(r.report.index_problems.size(), 1u);
    EXPECT_NE(r.report.index_problems[0].find("length changed"), std::string::npos) << r.report.index_problems[0];
    // Extended with a valid record: the index does not know it, the scan does.
    std::string extended = whole;
    encode_outcome_record(extended, 1 << 8, 7, 0, recipient_status::bounced, 1, 0, decode_record(whole, 0)->salt);
    write_file(seg, extended);
    const recovery reference2 = scan();
    r = recover();
    EXPECT_EQ(r.report.indexed_segments, files(".seg").size() - 1);
    EXPECT_EQ(r.calls.calls, reference2.calls.calls);
    EXPECT_EQ(r.calls.calls.size(), reference.calls.calls.size() + 2);  // the cut record and the new one
}

TEST_F(SegmentIndexTest, ASegmentWithADamagedSegmentRecordIsScannedNotIndexed) {
    fill();
    const std::string seg = _shard + "/" + segment_file_name(1);
    std::string bytes = read_file(seg);
    bytes[record_header_size] ^= 0x01;  // the first copy's salt
    write_file(seg, bytes);
    const recovery r = recover();
    EXPECT_EQ(r.report.indexed_segments, files(".seg").size() - 1);
    ASSERT_EQ(r.report.problems.size(), 1u);
    EXPECT_NE(r.report.problems[0].find("damaged; using the other"), std::string::npos);
}

// ---- the format alone ------------------------------------------------------------------

namespace {

std::string segment_with(const std::vector<std::string>& records, std::uint32_t salt) {
    std::string seg;
    encode_segment_record(seg, salt);
    encode_segment_record(seg, salt);
    for (const auto& r : records) seg += r;
    return seg;
}

}  // namespace

// A compaction's copy (type 5) keeps its recipient states and envelope in the index; only
// its message bytes are left out, even when the spool holds the whole record.
TEST(SegmentIndexFormat, AMessageCopyComesBackAsDecodeRecordReadsIt) {
    const std::uint32_t salt = 0x1234567;
    protocol::envelope env;
    env.queue_id = 77;
    env.helo = "h.example";
    env.mail_from = "a@example.org";
    env.auth_user = "alice";
    env.rcpt_to = {"x@example.net", "y@example.net"};
    const std::vector<recipient_state> states = {{recipient_status::delivered, 1, 0},
                                                 {recipient_status::deferred, 3, 999}};
    std::string copy;
    encode_message_copy_record(copy, env, "198.51.100.1", 5, "Subject: c\r\n\r\nbody\r\n", states, salt);
    std::string message_head;
    const std::string body = "Subject: m\r\n\r\n" + std::string(500, 'm') + "\r\n";
    encode_message_record(message_head, env, "198.51.100.2", 6, body, salt);
    std::string outcome;
    encode_outcome_record(outcome, 77, 8, 1, recipient_status::bounced, 4, 0, salt);
    const std::string seg = segment_with({copy, message_head + body, outcome}, salt);

    segment_index_builder b;
    b.start(9, salt);
    std::uint64_t off = segment_records_size;
    b.add(off, copy, 0);  // whole in the arena
    off += copy.size();
    b.add(off, message_head, body.size());  // envelope in the arena, message written separately
    off += message_head.size() + body.size();
    b.add(off, outcome, 0);
    const std::string index = b.finish(seg.size());
    ASSERT_FALSE(index.empty());
    auto entries = parse_segment_index(index, index_expectation{9, salt, seg.size()});
    ASSERT_TRUE(entries.has_value()) << describe(entries.error());
    ASSERT_EQ(entries->size(), 3u);
    std::uint64_t pos = segment_records_size;
    for (const index_entry& e : *entries) {
        auto scanned = decode_record(std::string_view(seg).substr(pos), salt);
        ASSERT_TRUE(scanned.has_value());
        if (scanned->header.type != record_type::outcome) {
            scanned->offset = pos;
            scanned->segment_salt = salt;
        }
        auto indexed = decode_index_entry(e, salt);
        ASSERT_TRUE(indexed.has_value());
        EXPECT_TRUE(indexed->message.empty());
        EXPECT_EQ(describe_call(9, *indexed), describe_call(9, *scanned));
        pos += scanned->record_size;
    }
    // Wrong expectations.
    EXPECT_EQ(parse_segment_index(index, {8, salt, seg.size()}).error(), index_error::wrong_segment);
    EXPECT_EQ(parse_segment_index(index, {9, salt, seg.size() + 1}).error(), index_error::wrong_length);
    EXPECT_EQ(parse_segment_index(index, {9, salt ^ 1, seg.size()}).error(), index_error::bad_checksum);
}

TEST(SegmentIndexFormat, RecordsThatDoNotTileTheSegmentGiveNoIndex) {
    const std::uint32_t salt = 5;
    std::string outcome;
    encode_outcome_record(outcome, 1, 2, 0, recipient_status::delivered, 1, 0, salt);
    segment_index_builder b;
    b.start(1, salt);
    b.add(segment_records_size, outcome, 0);
    b.add(segment_records_size + outcome.size() + 1, outcome, 0);  // a gap
    EXPECT_TRUE(b.finish(segment_records_size + 2 * outcome.size() + 1).empty());
    b.start(1, salt);
    b.add(segment_records_size, outcome, 0);
    EXPECT_TRUE(b.finish(segment_records_size + outcome.size() + 1).empty()) << "the segment is longer";
    b.start(1, salt);
    EXPECT_TRUE(b.finish(segment_records_size).empty()) << "no record: nothing worth writing";
}

// Pieces taken anywhere (between any two records, several times, in reused buffers) joined
// with finish()'s bytes are the index built without pieces.
TEST(SegmentIndexFormat, PiecesTakenAnywhereJoinIntoTheWholeIndex) {
    const std::uint32_t salt = 77;
    std::vector<std::string> records;
    for (std::uint64_t i = 0; i < 12; ++i) {
        std::string r;
        if (i % 3 == 1) {
            encode_outcome_record(r, i, 10 + i, 0, recipient_status::delivered, 1, 0, salt);
        } else {
            protocol::envelope env;
            env.queue_id = i;
            env.helo = "h.example";
            env.mail_from = "a@example.org";
            env.rcpt_to = {"b@example.net"};
            const std::string message(10 + i, 'm');
            encode_message_record(r, env, "192.0.2.1", i, message, salt);  // the record's head
            r += message;
        }
        records.push_back(std::move(r));
    }
    const std::string seg = segment_with(records, salt);
    const auto build = [&](std::uint32_t split_mask) {
        segment_index_builder b;
        b.start(4, salt);
        std::string joined;
        std::string spare;
        std::uint64_t off = segment_records_size;
        for (std::size_t i = 0; i < records.size(); ++i) {
            b.add(off, records[i], 0);
            off += records[i].size();
            if (split_mask & (1u << i)) {
                std::string piece = b.take_piece(std::move(spare));
                joined += piece;
                spare = std::move(piece);
            }
        }
        joined += b.finish(seg.size());
        return joined;
    };
    const std::string whole = build(0);
    const auto parsed = parse_segment_index(whole, index_expectation{4, salt, seg.size()});
    ASSERT_TRUE(parsed.has_value()) << (whole.empty() ? std::string("no index") : std::string(describe(parsed.error())));
    for (std::uint32_t mask = 1; mask < (1u << records.size()); mask += 7)
        ASSERT_TRUE(build(mask) == whole) << "split mask " << mask;
    EXPECT_TRUE(build((1u << records.size()) - 1) == whole) << "a piece after every record";
}
