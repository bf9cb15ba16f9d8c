// Unit tests of queue/message_store.h: recipient states, the outcome journal (what a restart
// finds), the log records, the failure report, and disk faults injected where the store
// writes (the spool's storage seam, queue/storage.h fault_storage). Hermetic: a temporary
// spool directory and the shard's io_uring; no network.
#include "queue/message_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/log.h"
#include "core/reactor.h"
#include "queue/bounce_rules.h"
#include "queue/storage.h"

using namespace ringrelay;
using namespace ringrelay::queue;
using protocol::commit_result;

namespace {

struct recording_reporter final : failure_reporter {
    bool take_over = true;
    std::vector<std::uint64_t> reported;          // queue ids
    std::vector<failed_recipient> failures;       // of the last report
    std::string body_seen;                        // the original's body the last report could quote
    bool report_failures(const stored_message& m) noexcept override {
        reported.push_back(m.queue_id);
        failures = m.failures;
        body_seen = m.body ? std::string(m.body->text) : "<none>";
        return take_over;
    }
};

struct recording_listener final : body_listener {
    std::vector<std::string> errors;  // one per body_ready: "" when the body was read
    std::vector<std::string> texts;   // the body read ("" on an error)
    void body_ready(stored_message& m, const std::string& error) noexcept override {
        errors.push_back(error);
        texts.emplace_back(m.body ? std::string(m.body->text) : std::string());
    }
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

const std::string body = "Subject: t\r\n\r\nhello\r\n";
constexpr std::uint64_t t0 = 1'700'000'000'000'000;

class MessageStoreTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/ringrelay-store-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        _dir = tmpl;
        ASSERT_FALSE(_reactor.init(256, core::probe_kernel_features()));
        _storage = std::make_unique<fault_storage>(_reactor);
        _spool = std::make_unique<spool>(_reactor, *_storage, _dir + "/shard-0");
        auto report = _spool->open();
        ASSERT_TRUE(report.has_value()) << (report ? "" : report.error());
        _reactor.add_turn_hook(_spool.get());
        _log_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
        ASSERT_GE(_log_fd, 0);
        // Not a turn hook: its lines stay in line_buffer() for the test to read.
        _log_writer = std::make_unique<core::log_writer>(_reactor, _log_fd);
        auto rules = load_bounce_rules("");  // the shipped rules, as the relay loads them
        ASSERT_TRUE(rules.has_value()) << rules.error();
        _rules = std::move(rules->table);
        _log = std::make_unique<delivery_log>(*_log_writer, 0, _rules);
        _store = std::make_unique<message_store>(*_spool, *_log, _reporter, queue_mode::deliver);
    }
    void TearDown() override {
        _store.reset();
        if (_spool) _reactor.remove_turn_hook(_spool.get());
        _spool.reset();
        if (_log_fd >= 0) ::close(_log_fd);
        std::filesystem::remove_all(_dir);
    }

    protocol::envelope envelope(std::uint64_t id, std::size_t recipients) {
        protocol::envelope env;
        env.queue_id = id;
        env.helo = "client.example";
        env.mail_from = "sender@example.org";
        for (std::size_t i = 0; i < recipients; ++i) {
            std::string rcpt = "r";
            rcpt += std::to_string(i);
            rcpt += "@example.net";
            env.rcpt_to.push_back(std::move(rcpt));
        }
        return env;
    }

    // Commits a message to the spool, as the shard does before "250 queued", and gives it to
    // the store.
    stored_message* commit(std::uint64_t id, std::size_t recipients, message_store* store = nullptr,
                           const std::string& text = body, std::string_view campaign = {}) {
        const protocol::envelope env = envelope(id, recipients);
        waiter w;
        w.owner = _spool.get();
        _spool->append(env, "127.0.0.1", text, t0, &w, campaign);
        for (int i = 0; i < 1000 && w.results.empty(); ++i) EXPECT_TRUE(_reactor.run_once(100));
        EXPECT_EQ(w.results, (std::vector<commit_result>{commit_result::ok}));
        return (store != nullptr ? store : _store.get())->add(env, "127.0.0.1", text, w.location, t0, campaign);
    }

    // Runs the loop until the spool has synced what was appended (bounded).
    void sync() {
        const unsigned before = _storage->syncs();
        for (int i = 0; i < 1000 && (_storage->syncs() == before || !_spool->idle()); ++i)
            ASSERT_TRUE(_reactor.run_once(100));
        ASSERT_GT(_storage->syncs(), before);
    }

    // What a restart finds: the spool directory read into a fresh store.
    struct restarted {
        std::unique_ptr<spool> sp;
        std::unique_ptr<message_store> store;
        message_store::recovered recovered;
    };
    restarted restart(queue_mode mode = queue_mode::deliver) {
        restarted r;
        r.sp = std::make_unique<spool>(_reactor, *_storage, _dir + "/other");  // never opened
        r.store = std::make_unique<message_store>(*r.sp, *_log, _reporter, mode);
        auto report = recover_directory(_dir + "/shard-0", r.store.get());
        EXPECT_TRUE(report.has_value());
        r.recovered = r.store->finish_recovery();
        return r;
    }

    std::string log_lines() { return _log_writer->line_buffer(); }

    std::string _dir;
    core::reactor _reactor;
    std::unique_ptr<fault_storage> _storage;
    std::unique_ptr<spool> _spool;
    int _log_fd = -1;
    std::unique_ptr<core::log_writer> _log_writer;
    protocol::bounce_rules _rules;
    std::unique_ptr<delivery_log> _log;
    recording_reporter _reporter;
    std::unique_ptr<message_store> _store;
};

protocol::outcome_reply peer_reply(std::uint16_t code, std::uint8_t cls, std::uint16_t subject, std::uint16_t detail,
                                   const char* text) {
    protocol::outcome_reply r;
    r.origin = protocol::reply_origin::peer;
    r.code = code;
    r.enhanced.status_class = cls;
    r.enhanced.subject = subject;
    r.enhanced.detail = detail;
    r.text = text;
    return r;
}

}  // namespace

TEST_F(MessageStoreTest, ANewMessageHasEveryRecipientPending) {
    stored_message* m = commit(1, 3);
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(_store->size(), 1u);
    EXPECT_EQ(_store->find(1), m);
    EXPECT_EQ(_store->find(2), nullptr);
    EXPECT_EQ(m->unfinished, 3u);
    EXPECT_EQ(m->status, std::vector<recipient_status>(3, recipient_status::pending));
    ASSERT_NE(m->body, nullptr) << "a new message's body is in the cache";
    EXPECT_EQ(m->body->text, body);
    EXPECT_EQ(m->size, body.size());
    EXPECT_EQ(m->arrival_us, t0);
}

TEST_F(MessageStoreTest, JournaledOutcomesAreWhatARestartResumes) {
    stored_message* m = commit(7, 3);
    const next_hop_ref hop{"mx.example.net", "192.0.2.1:25", "", ""};
    const protocol::outcome_reply ok = peer_reply(250, 2, 0, 0, "ok");
    m->attempts[0] = 1;
    _store->finish(*m, 0, recipient_status::delivered, outcome_note{hop, &ok, nullptr, t0 + 1000, 5});
    m->attempts[1] = 2;
    _store->defer(*m, 1, t0 + 60'000'000, outcome_note{hop, nullptr, "connection lost", t0 + 1000, 5});
    EXPECT_EQ(m->unfinished, 2u);
    sync();

    restarted r = restart();
    EXPECT_EQ(r.recovered.unfinished, 1u);
    stored_message* back = r.store->find(7);
    ASSERT_NE(back, nullptr);
    EXPECT_EQ(back->status[0], recipient_status::delivered);
    EXPECT_EQ(back->status[1], recipient_status::deferred);
    EXPECT_EQ(back->status[2], recipient_status::pending);
    EXPECT_EQ(back->attempts[1], 2u);
    EXPECT_EQ(back->unfinished, 2u);
    ASSERT_EQ(r.recovered.due.size(), 1u);
    EXPECT_EQ(r.recovered.due[0].first, t0 + 60'000'000) << "the deferred recipient's next attempt";
    EXPECT_EQ(r.recovered.due[0].second, 7u);
}

TEST_F(MessageStoreTest, AFinishedMessageIsNotResumedAndIsForgotten) {
    stored_message* m = commit(8, 2);
    const next_hop_ref hop{"mx.example.net", "192.0.2.1:25", "", ""};
    const protocol::outcome_reply ok = peer_reply(250, 2, 0, 0, "ok");
    for (std::uint32_t i = 0; i < 2; ++i)
        _store->finish(*m, i, recipient_status::delivered, outcome_note{hop, &ok, nullptr, t0, 1});
    m->jobs = 1;
    _store->release_if_done(*m);
    EXPECT_EQ(_store->find(8), m) << "kept while a job is out";
    m->jobs = 0;
    _store->release_if_done(*m);
    EXPECT_EQ(_store->find(8), nullptr);
    EXPECT_TRUE(_reporter.reported.empty()) << "nothing failed: no report";
    sync();
    restarted r = restart();
    EXPECT_EQ(r.recovered.unfinished, 0u);
    EXPECT_EQ(r.store->find(8), nullptr);
}

TEST_F(MessageStoreTest, AnUnroutedRecipientIsNotJournaled) {
    stored_message* m = commit(9, 1);
    const next_hop_ref none;
    _store->defer(*m, 0, t0 + 1'000'000, outcome_note{none, nullptr, "no route to the recipient's domain", t0});
    EXPECT_EQ(m->status[0], recipient_status::deferred);
    EXPECT_EQ(_store->counters().deferred, 1u);
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(_reactor.run_once(10));
    restarted r = restart();
    ASSERT_NE(r.store->find(9), nullptr);
    EXPECT_EQ(r.store->find(9)->status[0], recipient_status::pending) << "looked at again after a restart";
    EXPECT_NE(log_lines().find("\"type\":\"TransientFailure\""), std::string::npos);
    EXPECT_NE(log_lines().find("\"next_hop\":null,\"tenant\":\"example.org\",\"egress_source\":\"default\","
                               "\"reply\":\"no route to the recipient's domain\""),
              std::string::npos)
        << log_lines();
}

TEST_F(MessageStoreTest, AnOutcomeWhoseJournalSyncFailedIsTriedAgainAfterARestart) {
    stored_message* m = commit(10, 2);
    const next_hop_ref hop{"mx.example.net", "192.0.2.1:25", "", ""};
    const protocol::outcome_reply ok = peer_reply(250, 2, 0, 0, "ok");
    _storage->fail_next_sync(EIO);
    _store->finish(*m, 0, recipient_status::delivered, outcome_note{hop, &ok, nullptr, t0, 1});
    sync();
    restarted r = restart();
    ASSERT_NE(r.store->find(10), nullptr);
    EXPECT_EQ(r.store->find(10)->status[0], recipient_status::pending)
        << "the outcome never became durable: at-least-once, the recipient is tried again";
    EXPECT_EQ(r.recovered.unfinished, 1u);
}

TEST_F(MessageStoreTest, AnOutcomeWhoseJournalWriteFailedIsTriedAgainAfterARestart) {
    stored_message* m = commit(11, 1);
    const next_hop_ref hop{"mx.example.net", "192.0.2.1:25", "", ""};
    const protocol::outcome_reply no = peer_reply(550, 5, 1, 1, "no such user");
    _storage->fail_next_write(ENOSPC);
    _store->finish(*m, 0, recipient_status::bounced, outcome_note{hop, &no, nullptr, t0, 1});
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(_reactor.run_once(10));
    restarted r = restart();
    ASSERT_NE(r.store->find(11), nullptr);
    EXPECT_EQ(r.store->find(11)->status[0], recipient_status::pending);
    // The store's own view is unchanged by the disk: the bounce is counted and logged once.
    EXPECT_EQ(_store->counters().bounced, 1u);
}

TEST_F(MessageStoreTest, FinalOutcomesAreLoggedAndCounted) {
    stored_message* m = commit(12, 3);
    // The site and the egress source the attempt had (issue 17).
    const next_hop_ref hop{"mx.example.net", "192.0.2.1:25", "TLSv1.3 TLS_AES_256_GCM_SHA384", "mx.example.net", "b"};
    const protocol::outcome_reply ok = peer_reply(250, 2, 0, 0, "2.0.0 ok");
    const protocol::outcome_reply no = peer_reply(550, 5, 1, 1, "5.1.1 no such user");
    m->attempts = {1, 1, 3};
    _store->finish(*m, 0, recipient_status::delivered, outcome_note{hop, &ok, nullptr, t0 + 2'000'000, 1500});
    _store->finish(*m, 1, recipient_status::bounced, outcome_note{hop, &no, nullptr, t0 + 2'000'000, 1500});
    _store->finish(*m, 2, recipient_status::expired,
                   outcome_note{next_hop_ref{}, nullptr, "message expired (--max-age)", t0 + 2'000'000});
    const delivery_counters c = _store->counters();
    EXPECT_EQ(c.delivered, 1u);
    EXPECT_EQ(c.bounced, 1u);
    EXPECT_EQ(c.expired, 1u);
    EXPECT_EQ(m->unfinished, 0u);
    const std::string log = log_lines();
    EXPECT_NE(log.find("{\"type\":\"Delivery\""), std::string::npos) << log;
    EXPECT_NE(log.find("\"recipient\":\"r0@example.net\",\"next_hop\":{\"name\":\"mx.example.net\","
                       "\"address\":\"192.0.2.1:25\"},\"site\":\"mx.example.net\",\"tenant\":\"example.org\","
                       "\"egress_source\":\"b\","
                       "\"reply\":\"250 2.0.0 ok\",\"tls\":"
                       "\"TLSv1.3 TLS_AES_256_GCM_SHA384\",\"attempt\":1,\"queued_seconds\":2.000,"
                       "\"attempt_seconds\":1.500}"),
              std::string::npos)
        << log;
    EXPECT_NE(log.find("{\"type\":\"Bounce\""), std::string::npos);
    EXPECT_NE(log.find("\"reply\":\"550 5.1.1 no such user\""), std::string::npos) << log;
    EXPECT_NE(log.find("{\"type\":\"Expiration\""), std::string::npos);
    EXPECT_NE(log.find("\"recipient\":\"r2@example.net\",\"next_hop\":null,\"tenant\":\"example.org\","
                       "\"egress_source\":\"default\","
                       "\"reply\":\"message expired (--max-age)\""
                       ",\"attempt\":3"),
              std::string::npos)
        << log;
}

// Issue 16: every failure record carries its bounce class (etc/bounce-classes.json), last; a
// Delivery record none. Replies from the next hop, our own reasons and refused greetings.
// Campaigns (issue 17): a message's campaign is in its records and comes back after a restart
// (from its spool record: the header it came in was stripped from the stored message).
TEST_F(MessageStoreTest, TheCampaignIsLoggedAndComesBackAfterARestart) {
    stored_message* with = commit(21, 2, nullptr, body, "Spring-Sale");
    stored_message* without = commit(22, 1);
    ASSERT_NE(with, nullptr);
    ASSERT_NE(without, nullptr);
    EXPECT_EQ(_store->campaign_of(*with), "Spring-Sale");
    EXPECT_EQ(_store->campaign_of(*without), "");
    const next_hop_ref hop{"mx.example.net", "192.0.2.1:25", "", "mx.example.net"};
    const protocol::outcome_reply ok = peer_reply(250, 2, 0, 0, "2.0.0 ok");
    with->attempts[0] = 1;
    _store->finish(*with, 0, recipient_status::delivered, outcome_note{hop, &ok, nullptr, t0 + 1000, 5});
    without->attempts[0] = 1;
    _store->finish(*without, 0, recipient_status::delivered, outcome_note{hop, &ok, nullptr, t0 + 1000, 5});
    const std::string log = log_lines();
    EXPECT_NE(log.find("\"queue_id\":\"0000000000000015\""), std::string::npos) << log;
    EXPECT_NE(log.find("\"tenant\":\"example.org\",\"campaign\":\"Spring-Sale\",\"egress_source\""), std::string::npos)
        << log;
    EXPECT_EQ(log.find("\"campaign\""), log.rfind("\"campaign\"")) << "only the message with one: " << log;
    sync();

    restarted r = restart();
    EXPECT_EQ(r.recovered.unfinished, 1u);
    stored_message* back = r.store->find(21);
    ASSERT_NE(back, nullptr);
    EXPECT_EQ(r.store->campaign_of(*back), "Spring-Sale");
    EXPECT_EQ(back->status[0], recipient_status::delivered);
}

TEST_F(MessageStoreTest, FailureRecordsCarryTheirBounceClass) {
    stored_message* m = commit(15, 5);
    const next_hop_ref hop{"mx.example.net", "192.0.2.1:25", "", ""};
    const next_hop_ref none;
    const protocol::outcome_reply ok = peer_reply(250, 2, 0, 0, "2.0.0 ok");
    // https://support.google.com/a/answer/3726730, https://smtpfieldmanual.com/spamfilter/exchangeonline
    const protocol::outcome_reply unknown =
        peer_reply(550, 5, 1, 1, "5.1.1 The email account that you tried to reach does not exist. Please try\n"
                                 "5.1.1 double-checking the recipient's email address for typos or\n"
                                 "5.1.1 unnecessary spaces. - gsmtp");
    const protocol::outcome_reply banned = peer_reply(
        550, 5, 7, 606,
        "5.7.606 Access denied, banned sending IP [192.0.2.1]. To request removal from this list please visit "
        "https://sender.office.com/ and follow the directions. (AS16012609)");
    _store->finish(*m, 0, recipient_status::delivered, outcome_note{hop, &ok, nullptr, t0 + 1, 1});
    _store->finish(*m, 1, recipient_status::bounced, outcome_note{hop, &unknown, nullptr, t0 + 1, 1});
    _store->finish(*m, 2, recipient_status::bounced, outcome_note{hop, &banned, nullptr, t0 + 1, 1});
    _store->defer(*m, 3, t0 + 60'000'000,
                  outcome_note{hop, nullptr, "cannot reach 192.0.2.1:25: Connection refused", t0 + 1, 1});
    _store->defer(*m, 4, t0 + 60'000'000,
                  outcome_note{hop, nullptr, "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using "
                                             "zen.spamhaus.org", t0 + 1, 1});
    _store->finish(*m, 3, recipient_status::expired, outcome_note{none, nullptr, "message expired (--max-age)", t0 + 2});
    const std::string log = log_lines();
    const auto record = [&](const char* type, const char* rcpt) {
        const std::string key = std::string("\"type\":\"") + type + "\"";
        for (std::size_t at = log.find(key); at != std::string::npos; at = log.find(key, at + 1)) {
            const std::size_t end = log.find('\n', at);
            const std::string line = log.substr(at, end - at);
            if (line.find(std::string("\"recipient\":\"") + rcpt + "\"") != std::string::npos) return line;
        }
        return std::string();
    };
    EXPECT_EQ(record("Delivery", "r0@example.net").find("bounce_class"), std::string::npos) << log;
    EXPECT_NE(record("Bounce", "r1@example.net").find(",\"bounce_class\":\"invalid-recipient\",\"bounce_rule\":\"status-x.1.1\"}"),
              std::string::npos)
        << log;
    EXPECT_NE(record("Bounce", "r2@example.net")
                  .find(",\"bounce_class\":\"reputation\",\"blocklist\":\"Microsoft\","
                        "\"bounce_rule\":\"blocklist-microsoft-banned-ip\"}"),
              std::string::npos)
        << log;
    EXPECT_NE(record("TransientFailure", "r3@example.net").find("\"bounce_class\":\"routing\""), std::string::npos) << log;
    EXPECT_NE(record("TransientFailure", "r4@example.net").find("\"bounce_class\":\"reputation\",\"blocklist\":\"Spamhaus\""),
              std::string::npos)
        << log;
    EXPECT_NE(record("Expiration", "r3@example.net").find(",\"bounce_class\":\"routing\",\"bounce_rule\":\"local-expired\"}"),
              std::string::npos)
        << log;
    // What the suppression list will read: the same verdict as the log's.
    const protocol::bounce_verdict v = _log->classify(outcome_note{hop, &unknown, nullptr, t0});
    EXPECT_EQ(v.cls, protocol::bounce_class::invalid_recipient);
}

// Issue 16: a bounce is classified once, by the delivery (for the suppression list, with the log
// on or off); the record carries the verdict the note brings instead of classifying again.
TEST_F(MessageStoreTest, ABounceIsLoggedWithTheVerdictItsNoteCarries) {
    stored_message* m = commit(16, 2);
    const next_hop_ref hop{"mx.example.net", "192.0.2.1:25", "", ""};
    const protocol::outcome_reply unknown = peer_reply(550, 5, 1, 1, "5.1.1 User unknown");
    // Not what the rules say of this reply: only a verdict taken from the note can be logged so.
    const protocol::bounce_verdict given{protocol::bounce_class::reputation, "Given", "given-rule"};
    outcome_note note{hop, &unknown, nullptr, t0 + 1, 1};
    note.verdict = &given;
    _store->finish(*m, 0, recipient_status::bounced, note);
    _store->finish(*m, 1, recipient_status::bounced, outcome_note{hop, &unknown, nullptr, t0 + 1, 1});
    const std::string log = log_lines();
    const auto bounce_of = [&](const char* rcpt) {
        const std::size_t at = log.find(std::string("\"recipient\":\"") + rcpt + "\"");
        if (at == std::string::npos) return std::string();
        const std::size_t begin = log.rfind('\n', at);
        const std::size_t start = begin == std::string::npos ? 0 : begin + 1;
        return log.substr(start, log.find('\n', at) - start);
    };
    EXPECT_NE(bounce_of("r0@example.net")
                  .find(",\"bounce_class\":\"reputation\",\"blocklist\":\"Given\",\"bounce_rule\":\"given-rule\"}"),
              std::string::npos)
        << log;
    EXPECT_NE(bounce_of("r1@example.net").find(",\"bounce_class\":\"invalid-recipient\",\"bounce_rule\":\"status-x.1.1\"}"),
              std::string::npos)
        << "without a verdict the log classifies: " << log;
}

TEST_F(MessageStoreTest, FailedRecipientsGoToTheReporterOnceTheMessageIsDone) {
    stored_message* m = commit(13, 3);
    const next_hop_ref hop{"mx.example.net", "192.0.2.1:25", "", ""};
    const protocol::outcome_reply ok = peer_reply(250, 2, 0, 0, "ok");
    const protocol::outcome_reply no = peer_reply(550, 5, 1, 1, "5.1.1 no such user");
    _store->finish(*m, 1, recipient_status::bounced, outcome_note{hop, &no, nullptr, t0 + 5, 1});
    _store->release_if_done(*m);
    EXPECT_TRUE(_reporter.reported.empty()) << "two recipients are not final yet";
    _store->finish(*m, 0, recipient_status::delivered, outcome_note{hop, &ok, nullptr, t0 + 6, 1});
    _store->finish(*m, 2, recipient_status::expired, outcome_note{hop, nullptr, "message expired (--max-age)", t0 + 7});
    _store->release_if_done(*m);
    EXPECT_EQ(_reporter.reported, (std::vector<std::uint64_t>{13}));
    ASSERT_EQ(_reporter.failures.size(), 2u);
    const failed_recipient& bounced = _reporter.failures[0];
    EXPECT_EQ(bounced.rcpt_index, 1u);
    EXPECT_EQ(bounced.status, recipient_status::bounced);
    EXPECT_EQ(bounced.remote, "mx.example.net");
    EXPECT_EQ(bounced.diagnostic, "550 5.1.1 no such user");
    EXPECT_EQ(bounced.enhanced, "5.1.1");
    EXPECT_TRUE(bounced.from_peer);
    EXPECT_EQ(bounced.time_us, t0 + 5);
    const failed_recipient& expired = _reporter.failures[1];
    EXPECT_EQ(expired.rcpt_index, 2u);
    EXPECT_EQ(expired.status, recipient_status::expired);
    EXPECT_EQ(expired.diagnostic, "message expired (--max-age)");
    EXPECT_EQ(expired.enhanced, "4.4.7") << "RFC 3463: delivery time expired";
    EXPECT_FALSE(expired.from_peer);
    EXPECT_EQ(_store->find(13), nullptr);
}

TEST_F(MessageStoreTest, ALocalBounceWithoutEnhancedStatusGets500) {
    stored_message* m = commit(14, 1);
    const next_hop_ref none;
    _store->finish(*m, 0, recipient_status::bounced, outcome_note{none, nullptr, "the sender gave up", t0});
    _store->release_if_done(*m);
    ASSERT_EQ(_reporter.failures.size(), 1u);
    EXPECT_EQ(_reporter.failures[0].diagnostic, "the sender gave up");
    EXPECT_EQ(_reporter.failures[0].enhanced, "5.0.0");
    EXPECT_EQ(_reporter.failures[0].remote, "");
}

TEST_F(MessageStoreTest, HoldModeKeepsNothingInMemoryAndRecoversNothingToDeliver) {
    message_store held(*_spool, *_log, _reporter, queue_mode::hold);
    const protocol::envelope env = envelope(20, 1);
    EXPECT_EQ(held.add(env, "127.0.0.1", body, record_location{1, 0, 0, 0}, t0), nullptr);
    EXPECT_EQ(held.size(), 0u);
    commit(21, 2);  // committed (synced): what a restart reads
    restarted r = restart(queue_mode::hold);
    EXPECT_EQ(r.recovered.unfinished, 1u) << "counted as queued";
    EXPECT_TRUE(r.recovered.due.empty()) << "but nothing is scheduled";
    EXPECT_EQ(r.store->size(), 0u);
}

// ---- bodies: the cache and the reads back from the spool ------------------------------------

class MessageBodyTest : public MessageStoreTest {
protected:
    // A store with its own cache budget whose reads are reported to _listener.
    std::unique_ptr<message_store> store_with_cache(std::uint64_t budget) {
        return std::make_unique<message_store>(*_spool, *_log, _reporter, queue_mode::deliver, budget, &_listener);
    }
    // Runs the loop until the listener heard `count` reads (bounded).
    void wait_reads(std::size_t count) {
        for (int i = 0; i < 1000 && _listener.errors.size() < count; ++i) ASSERT_TRUE(_reactor.run_once(100));
        ASSERT_EQ(_listener.errors.size(), count);
    }
    recording_listener _listener;
};

TEST_F(MessageBodyTest, WithoutRoomInTheCacheTheBodyIsReadBackByteExact) {
    auto store = store_with_cache(0);
    const std::string text = "Subject: big\r\n\r\n" + std::string(100'000, 'x') + "\r\n";
    stored_message* m = commit(30, 1, store.get(), text);
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->body, nullptr) << "nothing kept in memory";
    EXPECT_FALSE(store->need_body(*m)) << "not there: a read starts";
    EXPECT_EQ(m->jobs, 1u) << "the read holds the message";
    EXPECT_FALSE(store->need_body(*m)) << "a second call starts no second read";
    EXPECT_EQ(store->reads_in_flight(), 1u);
    wait_reads(1);
    EXPECT_EQ(_listener.errors[0], "");
    EXPECT_EQ(_listener.texts[0], text);
    EXPECT_EQ(m->jobs, 0u);
    EXPECT_EQ(store->cache_counters().reads, 1u);
    EXPECT_EQ(store->cache_counters().entries, 0u) << "a body over the budget is not cached";
}

TEST_F(MessageBodyTest, TheCacheKeepsTheNewestBodiesWithinItsBudget) {
    auto store = store_with_cache(2 * body.size());
    stored_message* a = commit(31, 1, store.get());
    stored_message* b = commit(32, 1, store.get());
    EXPECT_NE(a->body, nullptr);
    EXPECT_NE(b->body, nullptr);
    stored_message* c = commit(33, 1, store.get());
    EXPECT_EQ(a->body, nullptr) << "the oldest went";
    EXPECT_NE(b->body, nullptr);
    EXPECT_NE(c->body, nullptr);
    EXPECT_EQ(store->cache_counters().entries, 2u);
    EXPECT_EQ(store->cache_counters().bytes, 2 * body.size());
    EXPECT_TRUE(store->need_body(*c));
    EXPECT_EQ(store->cache_counters().hits, 1u);
    // A finished message leaves the cache at once.
    const next_hop_ref hop{"mx.example.net", "192.0.2.1:25", "", ""};
    const protocol::outcome_reply ok = peer_reply(250, 2, 0, 0, "ok");
    store->finish(*c, 0, recipient_status::delivered, outcome_note{hop, &ok, nullptr, t0, 1});
    store->release_if_done(*c);
    EXPECT_EQ(store->cache_counters().entries, 1u);
    EXPECT_EQ(store->cache_counters().bytes, body.size());
}

TEST_F(MessageBodyTest, ARecoveredMessageHasNoBodyInMemoryUntilAnAttemptReadsIt) {
    commit(34, 2);
    auto store = store_with_cache(1 << 20);
    auto report = recover_directory(_dir + "/shard-0", store.get());
    ASSERT_TRUE(report.has_value());
    (void)store->finish_recovery();
    stored_message* m = store->find(34);
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->body, nullptr) << "recovery does not keep bodies";
    EXPECT_EQ(m->size, body.size());
    EXPECT_FALSE(store->need_body(*m));
    wait_reads(1);
    EXPECT_EQ(_listener.errors[0], "");
    EXPECT_EQ(_listener.texts[0], body);
    EXPECT_TRUE(store->need_body(*m)) << "then cached";
}

TEST_F(MessageBodyTest, AReadErrorIsReportedWithItsReason) {
    auto store = store_with_cache(0);
    stored_message* m = commit(35, 1, store.get());
    _storage->fail_next_read(EIO);
    EXPECT_FALSE(store->need_body(*m));
    wait_reads(1);
    EXPECT_NE(_listener.errors[0].find("cannot read the message back from the spool"), std::string::npos);
    EXPECT_NE(_listener.errors[0].find("Input/output error"), std::string::npos) << _listener.errors[0];
    EXPECT_TRUE(m->body_unreadable);
    EXPECT_EQ(store->cache_counters().read_errors, 1u);
    // The next try reads it.
    EXPECT_FALSE(store->need_body(*m));
    wait_reads(2);
    EXPECT_EQ(_listener.errors[1], "");
    EXPECT_FALSE(m->body_unreadable);
}

TEST_F(MessageBodyTest, ACorruptRecordIsCaughtByItsChecksum) {
    auto store = store_with_cache(0);
    stored_message* m = commit(36, 1, store.get());
    _storage->corrupt_next_reads(1);
    EXPECT_FALSE(store->need_body(*m));
    wait_reads(1);
    EXPECT_NE(_listener.errors[0].find("checksum mismatch"), std::string::npos) << _listener.errors[0];
    EXPECT_EQ(_listener.texts[0], "");
}

TEST_F(MessageBodyTest, AMissingSegmentIsReportedNotBounced) {
    auto store = store_with_cache(0);
    stored_message* m = commit(37, 1, store.get());
    // The segment is gone before the spool ever opened it for reading.
    const std::string seg = _dir + "/shard-0/" + [&] {
        char name[32];
        std::snprintf(name, sizeof name, "%010llu.seg", static_cast<unsigned long long>(m->where.segment));
        return std::string(name);
    }();
    ASSERT_EQ(::unlink(seg.c_str()), 0);
    EXPECT_FALSE(store->need_body(*m));
    wait_reads(1);
    EXPECT_NE(_listener.errors[0].find("No such file or directory"), std::string::npos) << _listener.errors[0];
    EXPECT_TRUE(_reporter.reported.empty()) << "nothing bounced";
}

TEST_F(MessageBodyTest, ADsnWaitsForTheOriginalToBeReadBack) {
    auto store = std::make_unique<message_store>(*_spool, *_log, _reporter, queue_mode::deliver, 0, nullptr);
    stored_message* m = commit(38, 1, store.get());
    const next_hop_ref hop{"mx.example.net", "192.0.2.1:25", "", ""};
    const protocol::outcome_reply no = peer_reply(550, 5, 1, 1, "no such user");
    store->finish(*m, 0, recipient_status::bounced, outcome_note{hop, &no, nullptr, t0, 1});
    store->release_if_done(*m);
    EXPECT_TRUE(_reporter.reported.empty()) << "not before the body is back";
    EXPECT_EQ(store->reads_in_flight(), 1u);
    for (int i = 0; i < 1000 && _reporter.reported.empty(); ++i) ASSERT_TRUE(_reactor.run_once(100));
    ASSERT_EQ(_reporter.reported, (std::vector<std::uint64_t>{38}));
    EXPECT_EQ(_reporter.body_seen, body) << "the report quotes the original";
    EXPECT_EQ(store->find(38), nullptr);
}
