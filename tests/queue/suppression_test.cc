// Unit tests of the suppression list (issue 16): queue/suppression_table.h (lookups, expiry,
// growth, removal, concurrent readers while a writer grows the array, reclamation only after
// every reader's quiescent state), queue/suppression_file.h (the journal format read back,
// torn and corrupt records, generations and compaction), queue/suppression.h (tenants, the
// seam: which bounce classes suppress, with real replies classified by the shipped rules; the
// reply, a shard's group-committed journal through the fault storage) and queue/spool_lock.h.
#include "queue/suppression.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/reactor.h"
#include "protocol/bounce_class.h"
#include "queue/bounce_rules.h"
#include "queue/spool_lock.h"
#include "queue/suppression_file.h"
#include "queue/suppression_table.h"

using namespace ringrelay;
using namespace ringrelay::queue;

namespace {

constexpr std::uint32_t t0 = 1700000000;  // a fixed "now", Unix seconds

std::string temp_dir() {
    char tmpl[] = "/tmp/ringrelay-suppression-XXXXXX";
    const char* d = mkdtemp(tmpl);
    EXPECT_NE(d, nullptr);
    return d == nullptr ? std::string() : std::string(d);
}

// "u17@x": built by appending (GCC 12's -Wrestrict misfires on chains of operator+ at -O3).
std::string addr(const char* prefix, std::uint64_t n) {
    std::string out(prefix);
    out += std::to_string(n);
    out += "@x";
    return out;
}

void write_file(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << bytes;
}

suppression_entry entry(std::string tenant, std::string address, std::uint64_t time_s,
                        suppression_source source = suppression_source::hard_bounce) {
    return suppression_entry{std::move(tenant), std::move(address), time_s * 1000000, 7, source, {}, {}};
}

// A journal file's bytes as a shard writes them: two segment records, then the entries.
std::string journal_bytes(const std::vector<suppression_entry>& entries, std::uint32_t salt = 0x1234) {
    std::string out;
    encode_segment_record(out, salt);
    encode_segment_record(out, salt);
    for (const auto& e : entries) encode_suppression_record(out, e.tenant, e.address, e.source, e.queue_id, e.time_us, salt);
    return out;
}

}  // namespace

// ---- the table ----------------------------------------------------------------------------

TEST(SuppressionTable, FindsWhatWasAddedForItsTenantOnly) {
    suppression_table t(1, 0);
    t.add("example.org", "gone@example.net", t0, t0);
    EXPECT_EQ(t.lookup("example.org", "gone@example.net", t0), t0);
    EXPECT_FALSE(t.lookup("example.com", "gone@example.net", t0)) << "another tenant's list";
    EXPECT_FALSE(t.lookup("example.org", "other@example.net", t0));
    EXPECT_FALSE(t.lookup("example.orggone", "@example.net", t0)) << "the tenant/address boundary counts";
    EXPECT_EQ(t.size(), 1u);
}

TEST(SuppressionTable, ComparesTenantsAndAddressesWithoutAsciiCase) {
    suppression_table t(1, 0);
    t.add("Example.ORG", "Gone@Example.NET", t0, t0);
    EXPECT_EQ(t.lookup("example.org", "gone@example.net", t0), t0);
    EXPECT_EQ(t.lookup("EXAMPLE.ORG", "GONE@EXAMPLE.NET", t0), t0);
    t.add("alice", "J\xc3\xa9r\xc3\xb4me@example.net", t0, t0);
    EXPECT_EQ(t.lookup("ALICE", "j\xc3\xa9r\xc3\xb4me@EXAMPLE.net", t0), t0);
    EXPECT_FALSE(t.lookup("alice", "j\xc3\x89r\xc3\xb4me@example.net", t0)) << "non-ASCII bytes compare exactly";
}

TEST(SuppressionTable, EntriesExpireAfterTheTtl) {
    suppression_table t(1, 60);
    t.add("t", "a@x", t0, t0);
    EXPECT_EQ(t.lookup("t", "a@x", t0 + 59), t0);
    EXPECT_FALSE(t.lookup("t", "a@x", t0 + 60));
    EXPECT_FALSE(t.lookup("t", "a@x", t0 + 100000));
    EXPECT_EQ(t.lookup("t", "a@x", t0 - 5), t0) << "a clock that went back keeps the entry";
}

TEST(SuppressionTable, TtlZeroNeverExpires) {
    suppression_table t(1, 0);
    t.add("t", "a@x", 1, t0);
    EXPECT_EQ(t.lookup("t", "a@x", 0xFFFFFFF0u), 1u);
}

TEST(SuppressionTable, ALaterBounceMovesTheTimeAndAnEarlierDoesNot) {
    suppression_table t(1, 100);
    t.add("t", "a@x", t0, t0);
    t.add("t", "A@X", t0 + 50, t0 + 50);
    EXPECT_EQ(t.lookup("t", "a@x", t0 + 120), t0 + 50) << "the second bounce restarts the TTL";
    t.add("t", "a@x", t0 + 10, t0 + 120);
    EXPECT_EQ(t.lookup("t", "a@x", t0 + 120), t0 + 50);
    EXPECT_EQ(t.size(), 1u);
}

TEST(SuppressionTable, RemovedEntriesAreAbsentAndCanComeBack) {
    suppression_table t(1, 0);
    t.add("t", "a@x", t0, t0);
    t.add("t", "b@x", t0, t0);
    EXPECT_TRUE(t.remove("T", "A@x"));
    EXPECT_FALSE(t.remove("t", "a@x"));
    EXPECT_FALSE(t.remove("t", "never@x"));
    EXPECT_FALSE(t.lookup("t", "a@x", t0));
    EXPECT_EQ(t.lookup("t", "b@x", t0), t0);
    EXPECT_EQ(t.size(), 1u);
    t.add("t", "a@x", t0 + 1, t0 + 1);
    EXPECT_EQ(t.lookup("t", "a@x", t0 + 1), t0 + 1);
}

TEST(SuppressionTable, GrowingKeepsEveryLiveEntryAndDropsExpiredOnes) {
    suppression_table t(0, 1000);  // no concurrent reader
    // Half the entries are old enough to have expired by the time the array grows.
    for (int i = 0; i < 5000; ++i)
        t.add("tenant", addr("u", i), i % 2 == 0 ? t0 : t0 + 2000, t0 + 2000);
    for (int i = 0; i < 5000; ++i) {
        const auto found = t.lookup("tenant", addr("u", i), t0 + 2000);
        if (i % 2 == 0) {
            EXPECT_FALSE(found) << i;
        } else {
            EXPECT_EQ(found, t0 + 2000) << i;
        }
    }
    // Bounded memory: at most 4 slots per entry held.
    EXPECT_LE(t.capacity(), 4 * std::max<std::size_t>(t.size(), 256));
    EXPECT_LT(t.size(), 5000u) << "expired entries were dropped when the array grew";
    EXPECT_EQ(t.retired_arrays(), 0u) << "no reader registered: replaced arrays are freed at once";
}

TEST(SuppressionTable, ReplacedArraysWaitForEveryReadersQuiescentState) {
    suppression_table t(2, 0);
    t.reserve(5000, t0);  // replaces the first array
    ASSERT_EQ(t.retired_arrays(), 1u);
    t.quiescent(0);
    t.reclaim();
    EXPECT_EQ(t.retired_arrays(), 1u) << "reader 1 may still be inside a lookup of the old array";
    t.quiescent(1);
    t.reclaim();
    EXPECT_EQ(t.retired_arrays(), 0u);
    t.offline(1);
    t.reserve(50000, t0);
    t.quiescent(0);
    t.reclaim();
    EXPECT_EQ(t.retired_arrays(), 0u) << "an offline reader is not waited for";
}

// Readers on their own threads (as shards) look up entries that are always there while a
// writer adds thousands more, growing (and replacing) the array many times; each reader
// reports a quiescent state between lookups, as a shard does once per loop turn.
TEST(SuppressionTable, ConcurrentReadersNeverMissAnEntryWhileTheArrayGrows) {
    constexpr unsigned readers = 3;
    suppression_table t(readers, 0);
    for (int i = 0; i < 100; ++i) t.add("base", addr("b", i), t0, t0);
    std::atomic<bool> done{false};
    std::atomic<std::uint64_t> misses{0}, lookups{0};
    std::vector<std::thread> threads;
    for (unsigned r = 0; r < readers; ++r) {
        threads.emplace_back([&, r] {
            for (std::uint64_t n = 0; !done.load(std::memory_order_relaxed); ++n) {
                const std::string a = addr("b", n % 100);
                if (t.lookup("base", a, t0) != t0) misses.fetch_add(1);
                lookups.fetch_add(1, std::memory_order_relaxed);
                t.quiescent(r);
            }
            t.offline(r);
        });
    }
    for (int i = 0; i < 60000; ++i) t.add("grow", addr("g", i), t0, t0);
    done = true;
    for (auto& th : threads) th.join();
    EXPECT_EQ(misses.load(), 0u);
    EXPECT_GT(lookups.load(), 0u);
    for (int i = 0; i < 60000; i += 997) EXPECT_EQ(t.lookup("grow", addr("g", i), t0), t0) << i;
    t.reclaim();
    EXPECT_EQ(t.retired_arrays(), 0u);
}

// ---- the files -----------------------------------------------------------------------------

TEST(SuppressionFile, JournalReadsBackInOrder) {
    const std::vector<suppression_entry> in{entry("a.example", "x@y", t0), entry("alice", "z@y", t0 + 1, suppression_source::operator_added)};
    const journal_contents c = parse_suppression_journal(journal_bytes(in), "j");
    EXPECT_TRUE(c.problems.empty());
    ASSERT_EQ(c.entries.size(), 2u);
    EXPECT_EQ(c.entries[0].tenant, "a.example");
    EXPECT_EQ(c.entries[0].address, "x@y");
    EXPECT_EQ(c.entries[0].time_us, std::uint64_t{t0} * 1000000);
    EXPECT_EQ(c.entries[0].queue_id, 7u);
    EXPECT_EQ(c.entries[1].source, suppression_source::operator_added);
}

TEST(SuppressionFile, EmptyFileHasNoEntriesAndNoProblem) {
    const journal_contents c = parse_suppression_journal("", "j");
    EXPECT_TRUE(c.entries.empty());
    EXPECT_TRUE(c.problems.empty());
}

TEST(SuppressionFile, ATornLastRecordIsIgnoredAtEveryCut) {
    std::vector<suppression_entry> in;
    for (int i = 0; i < 3; ++i) in.push_back(entry("t", addr("u", i), t0));
    const std::string whole = journal_bytes(in);
    const std::string two = journal_bytes({in[0], in[1]});
    for (std::size_t cut = two.size(); cut < whole.size(); ++cut) {
        const journal_contents c = parse_suppression_journal(std::string_view(whole).substr(0, cut), "j");
        ASSERT_EQ(c.entries.size(), 2u) << cut;
        EXPECT_EQ(c.entries[1].address, "u1@x");
        EXPECT_EQ(c.problems.size(), cut == two.size() ? 0u : 1u) << cut;
    }
}

TEST(SuppressionFile, ACorruptRecordCostsOnlyItself) {
    std::vector<suppression_entry> in;
    for (int i = 0; i < 3; ++i) in.push_back(entry("t", addr("u", i), t0));
    std::string bytes = journal_bytes(in);
    const std::size_t second = journal_bytes({in[0]}).size();
    bytes[second + record_header_size + 8] ^= 0x01;  // a byte of the second entry's tenant
    const journal_contents c = parse_suppression_journal(bytes, "j");
    ASSERT_EQ(c.entries.size(), 2u);
    EXPECT_EQ(c.entries[0].address, "u0@x");
    EXPECT_EQ(c.entries[1].address, "u2@x");
    ASSERT_EQ(c.problems.size(), 1u);
    EXPECT_NE(c.problems[0].find("checksum mismatch"), std::string::npos) << c.problems[0];
}

TEST(SuppressionFile, AFileWithoutAValidSegmentRecordIsSkipped) {
    std::string bytes = journal_bytes({entry("t", "a@x", t0)});
    bytes[0] ^= 0x01;
    bytes[record_header_size + segment_payload_size] ^= 0x01;
    const journal_contents c = parse_suppression_journal(bytes, "j");
    EXPECT_TRUE(c.entries.empty());
    ASSERT_EQ(c.problems.size(), 1u);
    EXPECT_NE(c.problems[0].find("file skipped"), std::string::npos);
}

TEST(SuppressionFile, RecordsWrittenWithAnotherSaltAreNotRead) {
    // A forged record (say, inside an address) without the file's salt does not verify.
    std::string bytes = journal_bytes({}, 1);
    encode_suppression_record(bytes, "t", "forged@x", suppression_source::hard_bounce, 0, 1, 2);
    EXPECT_TRUE(parse_suppression_journal(bytes, "j").entries.empty());
}

TEST(SuppressionFile, MissingDirectoryIsAnEmptyListOfGenerationZero) {
    auto s = load_suppressions("/nonexistent/ringrelay/suppression");
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(s->generation, 0u);
    EXPECT_TRUE(s->entries.empty());
}

TEST(SuppressionFile, LoadMergesTheListAndTheShardJournalsKeepingTheLatestTime) {
    const std::string dir = temp_dir();
    ASSERT_TRUE(write_suppressions(dir, 3, {entry("t", "a@x", t0), entry("t", "b@x", t0)}).has_value());
    write_file(dir + "/" + suppression_journal_name(3, 0), journal_bytes({entry("t", "a@x", t0 + 10)}));
    write_file(dir + "/" + suppression_journal_name(3, 1), journal_bytes({entry("s", "a@x", t0 + 5), entry("t", "a@x", t0 + 7)}));
    write_file(dir + "/" + suppression_journal_name(2, 0), journal_bytes({entry("old", "stale@x", t0)}));
    auto s = load_suppressions(dir);
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(s->generation, 3u);
    EXPECT_TRUE(s->problems.empty());
    ASSERT_EQ(s->entries.size(), 3u) << "the older generation's journal is a stale leftover";
    EXPECT_EQ(s->entries[0].tenant, "s");
    EXPECT_EQ(s->entries[1].address, "a@x");
    EXPECT_EQ(s->entries[1].time_us, std::uint64_t{t0 + 10} * 1000000);
    EXPECT_EQ(s->entries[2].address, "b@x");
    std::filesystem::remove_all(dir);
}

// Issue 18: DELETE /api/v1/suppressions journals a removal record; it wins over every earlier
// addition of the pair, in any file of the generation, and loses to a later one.
TEST(SuppressionFile, ARemovalRecordTakesThePairOffUntilALaterAddition) {
    const std::string dir = temp_dir();
    ASSERT_TRUE(write_suppressions(dir, 3, {entry("t", "a@x", t0), entry("t", "b@x", t0), entry("t", "c@x", t0)}).has_value());
    std::string j0;
    encode_segment_record(j0, 9);
    encode_segment_record(j0, 9);
    encode_suppression_record(j0, "t", "a@x", suppression_source::api, 0, std::uint64_t{t0 + 5} * 1000000, 9, {},
                              suppression_change::remove);
    encode_suppression_record(j0, "t", "b@x", suppression_source::api, 0, std::uint64_t{t0 + 5} * 1000000, 9, {},
                              suppression_change::remove);
    write_file(dir + "/" + suppression_journal_name(3, 0), j0);
    // Shard 1 put b@x back after the removal (a later bounce), with a reason.
    std::string j1;
    encode_segment_record(j1, 7);
    encode_segment_record(j1, 7);
    encode_suppression_record(j1, "t", "b@x", suppression_source::api, 0, std::uint64_t{t0 + 9} * 1000000, 7, "asked us");
    write_file(dir + "/" + suppression_journal_name(3, 1), j1);
    auto s = load_suppressions(dir);
    ASSERT_TRUE(s.has_value());
    EXPECT_TRUE(s->problems.empty()) << s->problems.front();
    ASSERT_EQ(s->entries.size(), 2u) << "a@x is removed; b@x is back; c@x was never touched";
    EXPECT_EQ(s->entries[0].address, "b@x");
    EXPECT_EQ(s->entries[0].source, suppression_source::api);
    EXPECT_EQ(s->entries[0].reason, "asked us");
    EXPECT_EQ(s->entries[1].address, "c@x");
    // Compaction writes the list without the removed pair and without removal records.
    ASSERT_TRUE(write_suppressions(dir, 4, s->entries).has_value());
    auto again = load_suppressions(dir);
    ASSERT_TRUE(again.has_value());
    ASSERT_EQ(again->entries.size(), 2u);
    EXPECT_EQ(again->entries[0].reason, "asked us") << "the reason survives compaction";
    std::filesystem::remove_all(dir);
}

TEST(SuppressionFile, CompactionMakesANewGenerationAndRemovesTheOldFiles) {
    const std::string dir = temp_dir();
    ASSERT_TRUE(write_suppressions(dir, 1, {entry("t", "a@x", t0)}).has_value());
    write_file(dir + "/" + suppression_journal_name(1, 0), journal_bytes({entry("t", "b@x", t0)}));
    write_file(dir + "/0000000002.list.tmp", "a compaction that died before its rename");
    auto s = load_suppressions(dir);
    ASSERT_TRUE(s.has_value());
    ASSERT_EQ(s->entries.size(), 2u);
    ASSERT_TRUE(write_suppressions(dir, 2, s->entries).has_value());
    std::vector<std::string> files;
    for (const auto& f : std::filesystem::directory_iterator(dir)) files.push_back(f.path().filename());
    EXPECT_EQ(files, std::vector<std::string>{"0000000002.list"});
    auto again = load_suppressions(dir);
    ASSERT_TRUE(again.has_value());
    EXPECT_EQ(again->generation, 2u);
    EXPECT_EQ(again->entries.size(), 2u);
    std::filesystem::remove_all(dir);
}

TEST(SuppressionFile, AJournalWithoutItsGenerationsListIsReportedAndIgnored) {
    const std::string dir = temp_dir();
    ASSERT_TRUE(write_suppressions(dir, 1, {}).has_value());
    write_file(dir + "/" + suppression_journal_name(5, 0), journal_bytes({entry("t", "a@x", t0)}));
    auto s = load_suppressions(dir);
    ASSERT_TRUE(s.has_value());
    EXPECT_TRUE(s->entries.empty());
    ASSERT_EQ(s->problems.size(), 1u);
    EXPECT_NE(s->problems[0].find("no list of its generation"), std::string::npos);
    std::filesystem::remove_all(dir);
}

TEST(SuppressionFile, DropExpiredKeepsYoungerEntriesAndTtlZeroKeepsAll) {
    std::vector<suppression_entry> e{entry("t", "old@x", t0), entry("t", "new@x", t0 + 90)};
    auto all = e;
    drop_expired(all, std::uint64_t{t0 + 100} * 1000000, 0);
    EXPECT_EQ(all.size(), 2u);
    drop_expired(e, std::uint64_t{t0 + 100} * 1000000, 100);
    ASSERT_EQ(e.size(), 1u);
    EXPECT_EQ(e[0].address, "new@x");
}

// ---- a shard's side ------------------------------------------------------------------------

TEST(Suppression, TenantIsTheAuthUserElseTheSendersDomain) {
    protocol::envelope env;
    env.mail_from = "news@Mail.Example.ORG";
    EXPECT_EQ(tenant_of(env), "Mail.Example.ORG");
    env.auth_user = "alice";
    EXPECT_EQ(tenant_of(env), "alice");
    env.auth_user.clear();
    env.mail_from.clear();
    EXPECT_EQ(tenant_of(env), "") << "the null sender without AUTH has no tenant";
    env.mail_from = "postmaster";
    EXPECT_EQ(tenant_of(env), "");
}

// The seam (issue 16): a bounce suppresses when the bounce classifier, with the rules the relay
// ships (etc/bounce-classes.json), puts it in class invalid-recipient or inactive-mailbox. Real
// replies (the rules file's examples and Postfix's texts from tests/integration/suppression_test),
// read as delivery reads a next hop's reply.
TEST(Suppression, OnlyInvalidRecipientAndInactiveMailboxBouncesSuppress) {
    auto load = load_bounce_rules("");
    ASSERT_TRUE(load.has_value()) << load.error();
    const protocol::bounce_rules& rules = load->table;
    using protocol::bounce_class;
    struct row {
        const char* reply;
        bounce_class cls;
        bool suppresses;
    };
    const row rows[] = {
        {"550 5.1.1 <gone@bad.test>: Recipient address rejected: User unknown", bounce_class::invalid_recipient, true},
        {"550 5.1.1 <user@icloud.com>: user does not exist", bounce_class::invalid_recipient, true},
        {"554 delivery error: dd This user doesn't have a yahoo.com account (user@yahoo.com) [-5] - "
         "mta123.mail.mud.yahoo.com",
         bounce_class::invalid_recipient, true},
        {"550 5.2.1 <dead@bad.test>: Recipient address rejected: Mailbox disabled", bounce_class::inactive_mailbox, true},
        {"550 5.2.1 The email account that you tried to reach is inactive.", bounce_class::inactive_mailbox, true},
        {"552 5.2.2 <full@bad.test>: Recipient address rejected: Mailbox full", bounce_class::mailbox_full, false},
        {"552 5.2.2 The recipient's inbox is out of storage space and inactive.", bounce_class::mailbox_full, false},
        {"550 5.7.1 The user or domain that you are sending to (or from) has a policy that prohibits the email that "
         "you sent.",
         bounce_class::policy, false},
        // 5.2.1, which the enhanced code alone would take for a disabled mailbox.
        {"550 5.2.1 The user you are trying to contact is receiving email at a rate that prevents additional "
         "messages from being delivered.",
         bounce_class::rate_limited, false},
        {"550 5.7.1 This email has been rate limited.", bounce_class::rate_limited, false},
        {"554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
         bounce_class::reputation, false},
    };
    for (const row& r : rows) {
        const protocol::bounce_verdict v = rules.classify(protocol::bounce_input_from_reason(r.reply));
        EXPECT_EQ(v.cls, r.cls) << r.reply << ": " << protocol::to_string(v.cls) << " by " << v.rule;
        EXPECT_EQ(suppresses(v.cls), r.suppresses) << r.reply;
    }
    // Our own bounce for a domain that takes no mail (queue/destination_pool.cc) is a DNS
    // failure: the domain, not the mailbox, is what is wrong.
    protocol::bounce_input null_mx;
    null_mx.origin = protocol::rule_origin::local;
    null_mx.code = 550;
    null_mx.enhanced = protocol::enhanced_status{5, 1, 10};
    null_mx.text = "5.1.10 the domain accepts no mail (null MX, RFC 7505)";
    EXPECT_EQ(rules.classify(null_mx).cls, bounce_class::dns);
    EXPECT_FALSE(suppresses(rules.classify(null_mx).cls));
    // Every class: exactly the two suppress.
    for (std::size_t c = 0; c < protocol::bounce_class_count; ++c) {
        const auto cls = static_cast<bounce_class>(c);
        EXPECT_EQ(suppresses(cls), cls == bounce_class::invalid_recipient || cls == bounce_class::inactive_mailbox)
            << protocol::to_string(cls);
    }
}

TEST(Suppression, ReplyNamesTheAddressAndTheUtcDate) {
    std::string out = "old";
    format_suppressed_reply(out, "gone@example.net", 1773446400);  // 2026-03-14T00:00:00Z
    EXPECT_EQ(out, "<gone@example.net>: recipient suppressed after a hard bounce on 2026-03-14");
}

TEST(Suppression, TtlParsing) {
    EXPECT_EQ(parse_suppression_ttl("0"), 0u);
    EXPECT_EQ(parse_suppression_ttl("0s"), 0u);
    EXPECT_EQ(parse_suppression_ttl("90d"), 90u * 86400);
    EXPECT_EQ(parse_suppression_ttl("2s"), 2u);
    EXPECT_EQ(parse_suppression_ttl("1500ms"), 2u);
    EXPECT_FALSE(parse_suppression_ttl("soon").has_value());
    EXPECT_FALSE(parse_suppression_ttl("-1d").has_value());
}

class SuppressionListTest : public ::testing::Test {
protected:
    void SetUp() override {
        _dir = temp_dir();
        ASSERT_FALSE(_reactor.init(64, core::probe_kernel_features()));
        _storage = std::make_unique<fault_storage>(_reactor);
        _list = std::make_unique<suppression_list>(_table, *_storage, _dir, 4, 0);
        ASSERT_TRUE(_list->open().has_value());
        _reactor.add_turn_hook(_list.get());
        auto rules = load_bounce_rules("");
        ASSERT_TRUE(rules.has_value()) << rules.error();
        _rules = std::move(rules->table);
    }
    void TearDown() override {
        _reactor.remove_turn_hook(_list.get());
        _list.reset();
        std::filesystem::remove_all(_dir);
    }
    // Runs the loop until the journal has nothing waiting or in flight (bounded); `ticks`:
    // let a failed commit retry.
    void run_until_idle() {
        for (int i = 0; i < 200 && !_list->idle(); ++i) {
            ASSERT_TRUE(_reactor.run_once(20));
            _list->tick();
        }
        ASSERT_TRUE(_list->idle());
    }
    std::vector<suppression_entry> on_disk() {
        auto s = load_suppressions(_dir);
        EXPECT_TRUE(s.has_value());
        return s ? s->entries : std::vector<suppression_entry>{};
    }
    // A next hop's reply as the shipped rules classify it (what delivery hands the list); views
    // into _rules.
    protocol::bounce_verdict verdict(const char* reply) const {
        return _rules.classify(protocol::bounce_input_from_reason(reply));
    }

    std::string _dir;
    core::reactor _reactor;
    suppression_table _table{1, 0};
    std::unique_ptr<fault_storage> _storage;
    std::unique_ptr<suppression_list> _list;
    protocol::bounce_rules _rules;
};

TEST_F(SuppressionListTest, AHardBounceSuppressesTheRecipientForTheSendersTenantOnly) {
    write_suppressions(_dir, 4, {}).value();
    protocol::envelope env;
    env.queue_id = 0xABCD;
    env.mail_from = "news@Shop.Example";
    const auto now_us = std::uint64_t{t0} * 1000000;
    EXPECT_FALSE(_list->on_permanent_failure(env, "full@x.test", protocol::bounce_verdict{}, now_us))
        << "no rule matched: class other";
    const auto full = verdict("552 5.2.2 <full@x.test>: Recipient address rejected: Mailbox full");
    ASSERT_EQ(full.cls, protocol::bounce_class::mailbox_full);
    EXPECT_FALSE(_list->on_permanent_failure(env, "full@x.test", full, now_us));
    const auto unknown = verdict("550 5.1.1 <Gone@X.test>: Recipient address rejected: User unknown");
    ASSERT_EQ(unknown.cls, protocol::bounce_class::invalid_recipient);
    EXPECT_TRUE(_list->on_permanent_failure(env, "Gone@X.test", unknown, now_us));
    protocol::envelope same = env;
    same.mail_from = "billing@shop.example";
    EXPECT_EQ(_list->check(same, "gone@x.test", t0 + 1), t0);
    protocol::envelope other;
    other.mail_from = "a@other.example";
    EXPECT_FALSE(_list->check(other, "gone@x.test", t0 + 1));
    protocol::envelope null_sender;
    EXPECT_FALSE(_list->check(null_sender, "gone@x.test", t0 + 1));
    EXPECT_FALSE(_list->on_permanent_failure(null_sender, "gone2@x.test", unknown, now_us)) << "no tenant";
    run_until_idle();
    const auto disk = on_disk();
    ASSERT_EQ(disk.size(), 1u);
    EXPECT_EQ(disk[0].tenant, "shop.example");
    EXPECT_EQ(disk[0].address, "gone@x.test");
    EXPECT_EQ(disk[0].queue_id, 0xABCDu);
    EXPECT_EQ(disk[0].source, suppression_source::hard_bounce);
}

TEST_F(SuppressionListTest, EntriesOfOneTurnShareOneWriteAndOneSync) {
    write_suppressions(_dir, 4, {}).value();
    for (int i = 0; i < 20; ++i)
        _list->add("t", addr("u", i), suppression_source::hard_bounce, 0, std::uint64_t{t0} * 1000000);
    run_until_idle();
    EXPECT_EQ(_storage->writes(), 1u);
    EXPECT_EQ(_storage->syncs(), 1u);
    EXPECT_EQ(on_disk().size(), 20u);
    _list->add("t", "late@x", suppression_source::hard_bounce, 0, std::uint64_t{t0} * 1000000);
    run_until_idle();
    EXPECT_EQ(_storage->syncs(), 2u);
    EXPECT_EQ(on_disk().size(), 21u) << "a second commit appends after the first";
}

TEST_F(SuppressionListTest, AFailedSyncIsCutBackAndWrittenAgainLater) {
    write_suppressions(_dir, 4, {}).value();
    _list->add("t", "a@x", suppression_source::hard_bounce, 0, std::uint64_t{t0} * 1000000);
    run_until_idle();
    _storage->fail_next_sync(EIO);
    _list->add("t", "b@x", suppression_source::hard_bounce, 0, std::uint64_t{t0} * 1000000);
    ASSERT_TRUE(_reactor.run_once(20));  // the write, then the failing sync
    for (int i = 0; i < 10 && _list->stats().journal_failures == 0; ++i) ASSERT_TRUE(_reactor.run_once(20));
    ASSERT_EQ(_list->stats().journal_failures, 1u);
    EXPECT_EQ(_table.lookup("t", "b@x", t0), t0) << "in effect meanwhile";
    EXPECT_EQ(on_disk().size(), 1u) << "the failed batch was cut off the file";
    run_until_idle();
    const auto disk = on_disk();
    ASSERT_EQ(disk.size(), 2u);
    EXPECT_EQ(disk[1].address, "b@x");
}

TEST_F(SuppressionListTest, AShortWriteIsCompleted) {
    write_suppressions(_dir, 4, {}).value();
    _storage->short_next_write(10);
    for (int i = 0; i < 3; ++i)
        _list->add("t", addr("u", i), suppression_source::hard_bounce, 0, std::uint64_t{t0} * 1000000);
    run_until_idle();
    EXPECT_EQ(on_disk().size(), 3u);
    EXPECT_EQ(_storage->syncs(), 1u);
}

TEST_F(SuppressionListTest, AFailedWriteOfTheFirstBatchRewritesTheSegmentRecords) {
    write_suppressions(_dir, 4, {}).value();
    _storage->fail_next_write(ENOSPC);
    _list->add("t", "a@x", suppression_source::hard_bounce, 0, std::uint64_t{t0} * 1000000);
    run_until_idle();
    EXPECT_EQ(_list->stats().journal_failures, 1u);
    auto s = load_suppressions(_dir);
    ASSERT_TRUE(s.has_value());
    EXPECT_TRUE(s->problems.empty()) << s->problems.front();
    EXPECT_EQ(s->entries.size(), 1u);
}

// Issue 18: what the HTTP API does through the list. A removal is journaled (it outlives a
// restart) only when the table held the pair; when_durable() is told after the commit's sync.
TEST_F(SuppressionListTest, ARemovalIsJournaledAndWaitersAreToldAfterTheSync) {
    write_suppressions(_dir, 4, {}).value();
    const auto now_us = std::uint64_t{t0} * 1000000;
    _list->add("T", "A@x", suppression_source::api, 0, now_us, "complained");
    std::vector<bool> told;
    unsigned syncs_when_told = 0;
    std::size_t entries_when_told = 0;
    _list->when_durable([&](bool ok) {
        told.push_back(ok);
        syncs_when_told = _storage->syncs();
        entries_when_told = on_disk().size();
    });
    EXPECT_TRUE(told.empty()) << "never from inside the call";
    run_until_idle();
    ASSERT_EQ(told.size(), 1u);
    EXPECT_TRUE(told[0]);
    EXPECT_EQ(syncs_when_told, 1u) << "told once the fdatasync was done, not before";
    EXPECT_EQ(entries_when_told, 1u) << "the entry was in the file when told";
    auto disk = on_disk();
    ASSERT_EQ(disk.size(), 1u);
    EXPECT_EQ(disk[0].reason, "complained");
    EXPECT_EQ(disk[0].source, suppression_source::api);

    EXPECT_FALSE(_list->remove("t", "other@x", suppression_source::api, now_us + 1)) << "not on the list";
    EXPECT_TRUE(_list->remove("t", "a@X", suppression_source::api, now_us + 1));
    EXPECT_FALSE(_table.lookup("t", "a@x", t0 + 1)) << "off at once";
    _list->when_durable([&](bool ok) { told.push_back(ok); });
    run_until_idle();
    ASSERT_EQ(told.size(), 2u);
    EXPECT_TRUE(told[1]);
    EXPECT_TRUE(on_disk().empty()) << "the removal is in the journal: a restart keeps the pair off";
    EXPECT_EQ(_storage->syncs(), 2u) << "the pair that was not there journaled nothing extra";

    // Nothing waiting: told at the turn's end, not from inside the call.
    _list->when_durable([&](bool ok) { told.push_back(ok); });
    EXPECT_EQ(told.size(), 2u);
    run_until_idle();
    EXPECT_EQ(told.size(), 3u);
}

TEST_F(SuppressionListTest, AWaiterIsToldOfAFailedCommit) {
    write_suppressions(_dir, 4, {}).value();
    _storage->fail_next_sync(EIO);
    _list->add("t", "a@x", suppression_source::api, 0, std::uint64_t{t0} * 1000000);
    std::vector<bool> told;
    _list->when_durable([&](bool ok) { told.push_back(ok); });
    for (int i = 0; i < 20 && told.empty(); ++i) ASSERT_TRUE(_reactor.run_once(20));
    ASSERT_EQ(told.size(), 1u);
    EXPECT_FALSE(told[0]);
    run_until_idle();
    EXPECT_EQ(on_disk().size(), 1u) << "written again later all the same";
}

TEST_F(SuppressionListTest, TheJournalFileIsNewPerGeneration) {
    // Its name is the generation's: a second list on the same generation and shard is refused.
    suppression_list again(_table, *_storage, _dir, 4, 0);
    auto r = again.open();
    ASSERT_FALSE(r.has_value());
    EXPECT_NE(r.error().find(suppression_journal_name(4, 0)), std::string::npos) << r.error();
}

// ---- the spool lock ------------------------------------------------------------------------

TEST(SpoolLock, ASecondHolderIsRefusedWithTheFirstsPid) {
    std::string dir = temp_dir();
    dir += "/spool";
    auto first = spool_lock::acquire(dir);
    ASSERT_TRUE(first.has_value()) << first.error().text;
    auto second = spool_lock::acquire(dir);
    ASSERT_FALSE(second.has_value());
    EXPECT_TRUE(second.error().busy);
    EXPECT_EQ(second.error().pid, static_cast<long>(::getpid()));
    std::string expected = "the relay is running on ";
    expected += dir;
    expected += " (pid ";
    expected += std::to_string(::getpid());
    expected += ")";
    EXPECT_EQ(second.error().text, expected);
    { auto released = std::move(*first); }
    auto third = spool_lock::acquire(dir);
    EXPECT_TRUE(third.has_value());
    std::filesystem::remove_all(std::filesystem::path(dir).parent_path());
}
