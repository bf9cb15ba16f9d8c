// tests/queue/outbound_test.cc: queue/outbound.h, one outbound SMTP connection on its
// core::stream, hermetic: a real reactor and buffer ring (tests/core/stream_harness.h) and a
// scripted next hop on a loopback listener of the test's own (plaintext: the test's raw end
// of the socket; TLS: a core::stream server), with a fake outbound_owner (the pool's side of
// queue/outbound_link.h). What is checked: the dialogue on the wire (EHLO, MAIL, RCPT, DATA
// with dot-stuffing or BDAT, QUIT) with replies split across reads and a receive buffer ring
// so small that it runs dry; the reports in order (ready, one job_done per job with one
// outcome per recipient and the hop, closed) and never one inside another; 4xx and 5xx replies
// at MAIL, RCPT and the end of data; a connection reused for two messages; a message refused
// locally (handed over at the turn's end, the next job right behind it); a next hop that
// hangs up mid-transaction, one that refuses the connection, an abort (the pool's timeout);
// STARTTLS with the bytes behind the 220 discarded and the mail sent under TLS; a handshake
// that fails on TLS itself (the pool retries in plaintext) and one lost during the handshake
// (it does not).
#include "queue/outbound.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <filesystem>
#include <functional>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/net.h"
#include "queue/record.h"
#include "queue/spool.h"
#include "tests/core/stream_harness.h"

namespace ringrelay::queue {
namespace {

using core::testing::stream_harness;
using core::testing::test_tls;

// One job: the delivery_job and the bytes its outbound_message views. Its body is the
// origin's cached copy (kept alive here), as for a first attempt right after reception.
struct test_job {
    test_job(std::uint64_t tag, std::vector<std::string> rcpts, std::string text) {
        job.rcpt_to = std::move(rcpts);
        job.outbound.tag = tag;
        job.outbound.mail_from = "a@example.org";
        job.outbound.rcpt_to = job.rcpt_to;
        auto b = std::make_shared<message_body>();
        b->bytes = std::move(text);
        b->text = b->bytes;
        cache = b;
        job.cached = cache;
    }
    delivery_job job;
    body_ptr cache;  // the origin's cache (reset to make the connection read the spool)
};

// The pool's side: records every report, hands out the queued jobs (on ready and after each
// job), and answers QUIT once it has none (unless told to keep the connection idle).
struct fake_owner final : outbound_owner {
    struct done {
        delivery_job* job;
        protocol::message_outcome outcome;
        next_hop_ref hop;
    };
    std::vector<std::string> events;  // "ready", "done <tag>", "closed"
    std::vector<done> dones;
    std::vector<close_report> closes;
    std::deque<delivery_job*> jobs;
    bool quit_when_idle = true;
    int flush_requests = 0;
    int depth = 0;  // reports on the stack: never more than one

    next_step connection_ready(outbound_link&) noexcept override {
        const report r(*this);
        events.emplace_back("ready");
        return next();
    }
    next_step job_done(outbound_link&, delivery_job* job, const protocol::message_outcome& outcome,
                       const next_hop_ref& hop) noexcept override {
        const report r(*this);
        events.push_back("done " + std::to_string(outcome.tag));
        dones.push_back(done{job, outcome, hop});
        return next();
    }
    void connection_closed(outbound_link&, const close_report& report_) noexcept override {
        const report r(*this);
        events.emplace_back("closed");
        closes.push_back(report_);
    }
    void want_flush(outbound_link&) noexcept override { ++flush_requests; }

private:
    struct report {
        explicit report(fake_owner& o) : owner(o) {
            EXPECT_EQ(owner.depth, 0) << "a report made from inside another";
            ++owner.depth;
        }
        ~report() { --owner.depth; }
        fake_owner& owner;
    };
    next_step next() {
        if (!jobs.empty()) {
            delivery_job* j = jobs.front();
            jobs.pop_front();
            return next_step{j, false};
        }
        return next_step{nullptr, quit_when_idle};
    }
};

class OutboundTest : public ::testing::Test {
protected:
    // A ring of `buffers` receive buffers of `buffer_size` bytes (the relay's are 64 x 4 KiB).
    void start_harness(unsigned buffers, unsigned buffer_size) {
        if (!h.init(buffers, buffer_size)) GTEST_SKIP() << "no provided buffer rings / multishot receive";
        auto l = core::listen_reuseport(*core::parse_endpoint("127.0.0.1:0"), 4);
        ASSERT_TRUE(l);
        listener = *l;
        auto bound = core::local_endpoint(listener);
        ASSERT_TRUE(bound);
        address = *bound;
    }
    void SetUp() override { start_harness(64, 4096); }
    void TearDown() override {
        if (c) {
            // Whatever the test left open goes; nothing may be in flight when it is freed.
            c->abort("test over");
            EXPECT_TRUE(h.run_until([&] { return c->retirable(); })) << "the stream never finished";
            c.reset();
        }
        if (listener >= 0) ::close(listener);
        if (peer >= 0) ::close(peer);
    }

    // A started connection to the test's listener, MX "mx.test.invalid" for example.net.
    void open(protocol::tls_use starttls = protocol::tls_use::never) {
        protocol::client_config config;
        config.helo_name = "relay.test.invalid";
        config.starttls = starttls;
        connection_target target{address, "mx.test.invalid", "example.net", true, "mx.test.invalid"};
        c = std::make_unique<outbound>(h.services(), policy, owner, target, config, core::tls_verify::none);
        c->start();
    }
    // The next hop's end of the connection (accepted by the test).
    void accept_peer() {
        ASSERT_TRUE(h.run_until([&] {
            peer = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            return peer >= 0;
        })) << "the connection never arrived";
    }
    // The next hop says `text` (one write), then the loop runs a few turns, so that the next
    // say() arrives in another read.
    void say(std::string_view text) {
        h.write(peer, text);
        h.settle(3);
    }
    // Reads until `needle` arrives; returns everything read since the last call.
    std::string expect(std::string_view needle) { return h.take_until(peer, _got, needle); }
    std::string port_text() const { return std::to_string(address.port()); }
    // A job the owner hands out next; it lives as long as the fixture (the connection may still
    // hold it when a failed assertion ends the test early).
    test_job& job(std::uint64_t tag, std::vector<std::string> rcpts, std::string body) {
        test_job& j = _jobs.emplace_back(tag, std::move(rcpts), std::move(body));
        owner.jobs.push_back(&j.job);
        return j;
    }

    stream_harness h;
    core::config config;
    std::atomic<std::uint64_t> generation{0};
    tls_client_policy policy{config, generation, core::system_time()};
    fake_owner owner;
    std::unique_ptr<outbound> c;
    int listener = -1;
    core::endpoint address;
    int peer = -1;  // the next hop's end (closed by TearDown)

private:
    std::string _got;
    std::deque<test_job> _jobs;
};

constexpr std::string_view body_with_dot = "Subject: t\r\n\r\nline one\r\n.starts with a dot\r\n";

// PIPELINING: MAIL, both RCPTs and DATA in one go; every reply split across reads; a 5xx to
// one recipient; the body dot-stuffed; QUIT once the owner has no more jobs.
TEST_F(OutboundTest, PipelinedDialogueWithSplitRepliesReportsEachRecipient) {
    test_job& j1 = job(1, {"b@example.net", "c@example.net"}, std::string(body_with_dot));
    open();
    accept_peer();
    say("220 mx.test.invalid ES");
    say("MTP ready\r\n");
    EXPECT_EQ(expect("\r\n"), "EHLO relay.test.invalid\r\n");
    say("250-mx.test.invalid\r\n250-PIPE");
    EXPECT_TRUE(owner.events.empty()) << "half an EHLO reply is no session yet";
    say("LINING\r\n250 8BITMIME\r\n");
    EXPECT_EQ(expect("DATA\r\n"),
              "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n");
    ASSERT_EQ(owner.events, (std::vector<std::string>{"ready"}));
    EXPECT_TRUE(c->busy());
    say("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <c@example.net>: no such");
    say(" user\r\n35");
    say("4 End data with <CR><LF>.<CR><LF>\r\n");
    EXPECT_EQ(expect("\r\n.\r\n"), "Subject: t\r\n\r\nline one\r\n..starts with a dot\r\n.\r\n");
    EXPECT_EQ(owner.dones.size(), 0U);
    say("250 2.0.0 Ok: queued as 4711\r\n");
    ASSERT_EQ(owner.dones.size(), 1U);
    const auto& d = owner.dones[0];
    EXPECT_EQ(d.job, &j1.job);
    EXPECT_EQ(d.outcome.tag, 1U);
    EXPECT_EQ(d.outcome.kind, protocol::outcome_kind::accepted);
    EXPECT_EQ(d.outcome.reply.code, 250);
    EXPECT_EQ(d.outcome.reply.text, "2.0.0 Ok: queued as 4711");
    ASSERT_EQ(d.outcome.recipients.size(), 2U);
    EXPECT_EQ(d.outcome.recipients[0].kind, protocol::outcome_kind::accepted);
    EXPECT_EQ(d.outcome.recipients[1].kind, protocol::outcome_kind::permanent_failure);
    EXPECT_EQ(d.outcome.recipients[1].rcpt_code, 550);
    EXPECT_EQ(d.outcome.recipients[1].reply.text, "5.1.1 <c@example.net>: no such user");
    EXPECT_EQ(d.hop.name, "mx.test.invalid");
    EXPECT_EQ(d.hop.address, "127.0.0.1:" + port_text());
    EXPECT_EQ(d.hop.tls, "");
    // The owner had nothing more: QUIT.
    EXPECT_EQ(expect("\r\n"), "QUIT\r\n");
    EXPECT_TRUE(c->quitting());
    say("221 2.0.0 Bye\r\n");
    ASSERT_EQ(owner.events, (std::vector<std::string>{"ready", "done 1", "closed"}));
    const close_report& r = owner.closes[0];
    EXPECT_FALSE(r.before_greeting);
    EXPECT_EQ(r.reason, protocol::close_reason::quit);
    EXPECT_FALSE(r.tls_protocol_failure);
    EXPECT_EQ(r.hop.address, "127.0.0.1:" + port_text());
    EXPECT_EQ(r.why, "");
    // The stream closes the socket and finishes: the pool may free the connection.
    std::string rest;
    EXPECT_TRUE(h.read_to_end(peer, rest));
    EXPECT_EQ(rest, "");
    ASSERT_TRUE(h.run_until([&] { return c->retirable(); }));
    EXPECT_EQ(c->messages_sent(), 1U);
}

// Without PIPELINING one command at a time; the connection carries a second message after the
// first (reuse), whose MAIL gets a 4xx; the owner keeps the connection idle afterwards.
TEST_F(OutboundTest, OneCommandAtATimeReusedForASecondMessageWhoseMailGets4xx) {
    job(1, {"b@example.net"}, "Subject: one\r\n\r\nfirst\r\n");
    job(2, {"d@example.net"}, "Subject: two\r\n\r\nsecond\r\n");
    owner.quit_when_idle = false;
    open();
    accept_peer();
    say("220 mx.test.invalid ESMTP\r\n");
    EXPECT_EQ(expect("\r\n"), "EHLO relay.test.invalid\r\n");
    say("250 mx.test.invalid\r\n");
    EXPECT_EQ(expect("\r\n"), "MAIL FROM:<a@example.org>\r\n");
    say("250 2.1.0 Ok\r\n");
    EXPECT_EQ(expect("\r\n"), "RCPT TO:<b@example.net>\r\n");
    say("250 2.1.5 Ok\r\n");
    EXPECT_EQ(expect("\r\n"), "DATA\r\n");
    say("354 go ahead\r\n");
    EXPECT_EQ(expect("\r\n.\r\n"), "Subject: one\r\n\r\nfirst\r\n.\r\n");
    say("250 2.0.0 queued\r\n");
    // The next job runs on the same connection.
    EXPECT_EQ(expect("\r\n"), "MAIL FROM:<a@example.org>\r\n");
    say("451 4.3.0 Try again later\r\n");
    ASSERT_EQ(owner.events, (std::vector<std::string>{"ready", "done 1", "done 2"}));
    EXPECT_EQ(owner.dones[0].outcome.kind, protocol::outcome_kind::accepted);
    EXPECT_EQ(owner.dones[1].outcome.kind, protocol::outcome_kind::transient_failure);
    EXPECT_EQ(owner.dones[1].outcome.reply.code, 451);
    EXPECT_EQ(owner.dones[1].outcome.reply.text, "4.3.0 Try again later");
    EXPECT_EQ(c->messages_sent(), 2U);
    h.settle(5);
    EXPECT_TRUE(c->ready_for_job()) << "idle, open, waiting for the next job";
    EXPECT_FALSE(c->closing());
    // The pool's idle timeout: QUIT.
    c->finish();
    EXPECT_EQ(expect("\r\n"), "QUIT\r\n");
    say("221 2.0.0 Bye\r\n");
    ASSERT_EQ(owner.closes.size(), 1U);
    EXPECT_EQ(owner.closes[0].reason, protocol::close_reason::quit);
    ASSERT_TRUE(h.run_until([&] { return c->retirable(); }));
}

// A message the session refuses without asking the peer (SMTPUTF8 to a next hop that does not
// offer it): its outcome is handed over at the end of the turn, not from inside the report
// that gave the job, and the next job's commands leave right behind it.
TEST_F(OutboundTest, ALocalRefusalIsHandedOverAtTheTurnsEndAndTheNextJobFollows) {
    test_job& utf8 = job(10, {"b@example.net"}, "Subject: u\r\n\r\nu\r\n");
    utf8.job.outbound.utf8 = protocol::utf8_envelope::smtputf8;
    job(11, {"d@example.net"}, "Subject: plain\r\n\r\nplain\r\n");
    open();
    accept_peer();
    say("220 mx.test.invalid ESMTP\r\n");
    expect("EHLO relay.test.invalid\r\n");
    say("250-mx.test.invalid\r\n250 PIPELINING\r\n");
    EXPECT_EQ(expect("DATA\r\n"), "MAIL FROM:<a@example.org>\r\nRCPT TO:<d@example.net>\r\nDATA\r\n")
        << "nothing of the refused message reaches the wire";
    ASSERT_EQ(owner.events, (std::vector<std::string>{"ready", "done 10"}));
    EXPECT_EQ(owner.dones[0].outcome.kind, protocol::outcome_kind::permanent_failure);
    EXPECT_EQ(owner.dones[0].outcome.reply.origin, protocol::reply_origin::local);
    EXPECT_EQ(owner.flush_requests, 0) << "the stream's turn end does the handover";
    say("250 Ok\r\n250 Ok\r\n354 go\r\n");
    expect("\r\n.\r\n");
    say("250 2.0.0 queued\r\n");
    EXPECT_EQ(expect("\r\n"), "QUIT\r\n");
    say("221 Bye\r\n");
    ASSERT_EQ(owner.events, (std::vector<std::string>{"ready", "done 10", "done 11", "closed"}));
    EXPECT_EQ(owner.dones[1].outcome.kind, protocol::outcome_kind::accepted);
    EXPECT_EQ(c->messages_sent(), 2U);
}

// CHUNKING: the body goes in one BDAT LAST after the envelope's replies; a 5xx to it fails the
// message permanently.
TEST_F(OutboundTest, ChunkingSendsBdatAndA5xxToItFailsTheMessage) {
    job(7, {"b@example.net"}, std::string(body_with_dot));
    open();
    accept_peer();
    say("220 mx.test.invalid ESMTP\r\n");
    expect("EHLO relay.test.invalid\r\n");
    say("250-mx.test.invalid\r\n250-PIPELINING\r\n250 CHUNKING\r\n");
    EXPECT_EQ(expect("RCPT TO:<b@example.net>\r\n"), "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n");
    say("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
    const std::string bdat = "BDAT " + std::to_string(body_with_dot.size()) + " LAST\r\n" + std::string(body_with_dot);
    EXPECT_EQ(expect("dot\r\n"), bdat) << "BDAT carries the body as it is: no dot-stuffing, no final dot";
    say("554 5.7.1 Rejected as spam\r\n");
    // RFC 3030: after a refused BDAT the peer's transaction state is unknown: RSET, and the
    // outcome on its reply.
    EXPECT_EQ(expect("\r\n"), "RSET\r\n");
    EXPECT_TRUE(owner.dones.empty());
    say("250 2.0.0 Reset\r\n");
    ASSERT_EQ(owner.dones.size(), 1U);
    EXPECT_EQ(owner.dones[0].outcome.kind, protocol::outcome_kind::permanent_failure);
    EXPECT_EQ(owner.dones[0].outcome.reply.code, 554);
    EXPECT_EQ(owner.dones[0].outcome.recipients[0].kind, protocol::outcome_kind::permanent_failure);
    EXPECT_EQ(expect("\r\n"), "QUIT\r\n");
    say("221 Bye\r\n");
    ASSERT_EQ(owner.events, (std::vector<std::string>{"ready", "done 7", "closed"}));
}

// The next hop hangs up after DATA: the job's outcome says so (never accepted), then the
// connection is reported closed with the reason, and finishes.
TEST_F(OutboundTest, PeerHangingUpMidTransactionFailsTheJobAndReportsTheLoss) {
    job(3, {"b@example.net"}, "Subject: x\r\n\r\nx\r\n");
    open();
    accept_peer();
    say("220 mx.test.invalid ESMTP\r\n");
    expect("EHLO relay.test.invalid\r\n");
    say("250-mx.test.invalid\r\n250 PIPELINING\r\n");
    expect("DATA\r\n");
    say("250 Ok\r\n250 Ok\r\n354 go\r\n");
    expect("\r\n.\r\n");
    ::shutdown(peer, SHUT_RDWR);
    ASSERT_TRUE(h.run_until([&] { return !owner.closes.empty(); }));
    ASSERT_EQ(owner.events, (std::vector<std::string>{"ready", "done 3", "closed"}));
    EXPECT_NE(owner.dones[0].outcome.kind, protocol::outcome_kind::accepted);
    EXPECT_NE(owner.dones[0].outcome.kind, protocol::outcome_kind::not_attempted)
        << "the data may have been taken: never simply requeued";
    const close_report& r = owner.closes[0];
    EXPECT_FALSE(r.before_greeting);
    EXPECT_EQ(r.reason, protocol::close_reason::connection_lost);
    ASSERT_TRUE(h.run_until([&] { return c->retirable(); }));
}

// Nothing listens: reported closed before any greeting, with the system's reason; no job is
// taken.
TEST_F(OutboundTest, RefusedConnectIsReportedBeforeGreeting) {
    ::close(listener);
    listener = -1;
    job(4, {"b@example.net"}, "x\r\n");
    open();
    ASSERT_TRUE(h.run_until([&] { return !owner.closes.empty(); }));
    ASSERT_EQ(owner.events, (std::vector<std::string>{"closed"}));
    const close_report& r = owner.closes[0];
    EXPECT_TRUE(r.before_greeting);
    EXPECT_EQ(r.why, "cannot reach example.net: Connection refused");
    EXPECT_EQ(r.stage, attempt_stage::connect) << "issue 17: the receiver's refusal";
    EXPECT_FALSE(r.local_failure);
    EXPECT_EQ(r.code, 0U);
    EXPECT_EQ(owner.jobs.size(), 1U) << "the job stays with the pool";
    EXPECT_TRUE(c->closing());
    ASSERT_TRUE(h.run_until([&] { return c->retirable(); }));
}

// Review finding 6c: another 4xx or 5xx greeting ends the session too (RFC 5321 §3.1: 554 is
// "no SMTP service here"): QUIT, reported closed before the greeting with its reply, and no job
// takes it as its outcome (a 554 used to bounce the job the connection was opened for).
class OutboundRefusedGreeting : public OutboundTest, public testing::WithParamInterface<const char*> {};

TEST_P(OutboundRefusedGreeting, EndsTheSessionWithoutTakingAJob) {
    job(4, {"b@example.net"}, "x\r\n");
    open();
    accept_peer();
    say(std::string(GetParam()) + "\r\n");
    EXPECT_EQ(expect("\r\n"), "QUIT\r\n");
    say("221 Bye\r\n");
    ASSERT_TRUE(h.run_until([&] { return !owner.closes.empty(); }));
    ASSERT_EQ(owner.events, (std::vector<std::string>{"closed"})) << "no job taken, none failed";
    const close_report& r = owner.closes[0];
    EXPECT_TRUE(r.before_greeting);
    EXPECT_EQ(r.stage, attempt_stage::greeting);
    EXPECT_EQ(std::to_string(r.code) + " " + r.text, GetParam());
    EXPECT_EQ(r.why, GetParam()) << "the reason the pool defers its waiting mail with";
    EXPECT_EQ(owner.jobs.size(), 1U) << "the job stays with the pool";
}

INSTANTIATE_TEST_SUITE_P(Replies, OutboundRefusedGreeting,
                         testing::Values("554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked",
                                         "450 4.3.2 Service currently unavailable"));

// Issue 17: a 421 greeting (the receiver's connection limit) is reported before the greeting,
// at the greeting stage, with the reply the pool reads the throttle signal from.
TEST_F(OutboundTest, A421GreetingIsReportedWithItsReplyAtTheGreetingStage) {
    job(4, {"b@example.net"}, "x\r\n");
    open();
    accept_peer();
    say("421 4.7.0 Try again later, closing connection. (too many connections from your IP)\r\n");
    ASSERT_TRUE(h.run_until([&] { return !owner.closes.empty(); }));
    ASSERT_EQ(owner.events, (std::vector<std::string>{"closed"})) << "no job taken";
    const close_report& r = owner.closes[0];
    EXPECT_TRUE(r.before_greeting);
    EXPECT_EQ(r.stage, attempt_stage::greeting);
    EXPECT_EQ(r.code, 421U);
    EXPECT_EQ(r.text, "4.7.0 Try again later, closing connection. (too many connections from your IP)");
    EXPECT_FALSE(r.local_failure);
    EXPECT_EQ(owner.jobs.size(), 1U);
}

// The pool's command timeout: abort() with a job on the wire gives the job back with a
// failure and reports the connection closed; the peer sees the end.
TEST_F(OutboundTest, AbortWithAJobOnTheWireFailsItAndCloses) {
    job(5, {"b@example.net"}, "x\r\n");
    open();
    accept_peer();
    say("220 mx.test.invalid ESMTP\r\n");
    expect("EHLO relay.test.invalid\r\n");
    say("250 mx.test.invalid\r\n");
    expect("MAIL FROM:<a@example.org>\r\n");
    EXPECT_TRUE(c->busy());
    c->abort("timeout waiting for the next hop");
    ASSERT_EQ(owner.events, (std::vector<std::string>{"ready", "done 5", "closed"}));
    EXPECT_NE(owner.dones[0].outcome.kind, protocol::outcome_kind::accepted);
    EXPECT_FALSE(owner.closes[0].before_greeting);
    std::string rest;
    EXPECT_TRUE(h.read_to_end(peer, rest));
    ASSERT_TRUE(h.run_until([&] { return c->retirable(); }));
    EXPECT_EQ(owner.events.size(), 3U) << "nothing reported twice";
}

// The same timeout before the greeting: reported before_greeting with the reason (the pool
// defers the destination's waiting jobs with it); no job taken.
TEST_F(OutboundTest, AbortBeforeTheGreetingIsReportedWithTheReason) {
    job(5, {"b@example.net"}, "x\r\n");
    open();
    accept_peer();
    h.settle(3);
    c->abort("timeout waiting for the next hop");
    ASSERT_EQ(owner.events, (std::vector<std::string>{"closed"}));
    EXPECT_TRUE(owner.closes[0].before_greeting);
    EXPECT_EQ(owner.closes[0].why, "cannot reach example.net: timeout waiting for the next hop");
    EXPECT_EQ(owner.jobs.size(), 1U);
    std::string rest;
    EXPECT_TRUE(h.read_to_end(peer, rest));
    EXPECT_EQ(rest, "");
    ASSERT_TRUE(h.run_until([&] { return c->retirable(); }));
}

// A buffer ring of two 16-byte buffers: every reply arrives in pieces, and the ring runs dry
// (-ENOBUFS) while the peer sends a long EHLO reply in one write; the dialogue still ends
// right, byte for byte.
class OutboundTinyRingTest : public OutboundTest {
protected:
    void SetUp() override { start_harness(2, 16); }
};

TEST_F(OutboundTinyRingTest, RepliesSplitAcrossManyReadsAndADryRing) {
    job(6, {"b@example.net"}, "Subject: x\r\n\r\nx\r\n");
    open();
    accept_peer();
    std::string ehlo = "250-mx.test.invalid greets relay.test.invalid\r\n";
    for (int i = 0; i < 40; ++i) ehlo += "250-X-FILLER-" + std::to_string(i) + " some words to make it long\r\n";
    ehlo += "250 PIPELINING\r\n";
    h.write(peer, "220 mx.test.invalid ESMTP a greeting longer than one buffer\r\n");
    expect("EHLO relay.test.invalid\r\n");
    h.write(peer, ehlo);  // about 1.7 KiB through 32 bytes of ring
    EXPECT_EQ(expect("DATA\r\n"), "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
    h.write(peer, "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 Enter message, end with a dot\r\n");
    expect("\r\n.\r\n");
    h.write(peer, "250 2.0.0 Ok: queued as 0123456789ABCDEF\r\n");
    EXPECT_EQ(expect("\r\n"), "QUIT\r\n");
    h.write(peer, "221 2.0.0 Bye\r\n");
    ASSERT_TRUE(h.run_until([&] { return !owner.closes.empty(); }));
    ASSERT_EQ(owner.events, (std::vector<std::string>{"ready", "done 6", "closed"}));
    EXPECT_EQ(owner.dones[0].outcome.kind, protocol::outcome_kind::accepted);
    EXPECT_EQ(owner.dones[0].outcome.reply.text, "2.0.0 Ok: queued as 0123456789ABCDEF");
    EXPECT_EQ(owner.closes[0].reason, protocol::close_reason::quit);
}

// ---- STARTTLS ---------------------------------------------------------------------------

// The next hop's side under TLS: a core::stream server in the test.
struct tls_peer final : core::stream_owner {
    std::string data;
    int tls_ready = 0;
    int finished = 0;
    std::vector<core::stream_end> ends;
    void on_stream_data(std::string_view d) noexcept override { data.append(d); }
    void on_stream_end(core::stream_end why, std::string_view) noexcept override { ends.push_back(why); }
    void on_stream_finished() noexcept override { ++finished; }
    void on_stream_tls_ready() noexcept override { ++tls_ready; }
};

class OutboundTlsTest : public OutboundTest {
protected:
    void SetUp() override {
        OutboundTest::SetUp();
        if (IsSkipped()) return;
        tls = test_tls::make("mx.test.invalid");
        ASSERT_NE(tls, nullptr);
    }
    // Greeting and an EHLO reply offering STARTTLS; the client's STARTTLS read.
    void up_to_starttls() {
        accept_peer();
        say("220 mx.test.invalid ESMTP\r\n");
        EXPECT_EQ(expect("\r\n"), "EHLO relay.test.invalid\r\n");
        say("250-mx.test.invalid\r\n250-PIPELINING\r\n250 STARTTLS\r\n");
        EXPECT_EQ(expect("\r\n"), "STARTTLS\r\n");
    }
    std::unique_ptr<test_tls> tls;
};

// STARTTLS: the 220 with a forged reply behind it in the same read (discarded, never read as
// SMTP: RFC 3207 §5), the handshake, EHLO again under TLS, the mail, QUIT, close_notify.
TEST_F(OutboundTlsTest, StartTlsUpgradesDiscardsWhatCameBehindThe220AndDeliversUnderTls) {
    job(8, {"b@example.net"}, "Subject: tls\r\n\r\nsecret\r\n");
    open(protocol::tls_use::when_offered);
    up_to_starttls();
    EXPECT_TRUE(owner.events.empty()) << "no session before TLS";
    // One write, so one read: the session stops at the 220 and the rest is dropped.
    h.write(peer, "220 2.0.0 Ready to start TLS\r\n250 2.0.0 forged\r\n");
    tls_peer server_owner;
    core::stream server(h.services(), server_owner);
    server.adopt(::dup(peer));
    ASSERT_TRUE(server.start_tls_server(*tls->server, core::tls_start::now, core::tls_engine::memory));
    server.start_receiving();
    ASSERT_TRUE(h.run_until([&] { return server_owner.data.find("\r\n") != std::string::npos; }));
    EXPECT_EQ(server_owner.tls_ready, 1);
    EXPECT_EQ(server_owner.data, "EHLO relay.test.invalid\r\n") << "EHLO again under TLS (RFC 3207 §4.2)";
    server_owner.data.clear();
    server.out() += "250-mx.test.invalid\r\n250 PIPELINING\r\n";
    server.want_flush();
    ASSERT_TRUE(h.run_until([&] { return server_owner.data.find("DATA\r\n") != std::string::npos; }));
    EXPECT_EQ(server_owner.data, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
    server_owner.data.clear();
    server.out() += "250 Ok\r\n250 Ok\r\n354 go\r\n";
    server.want_flush();
    ASSERT_TRUE(h.run_until([&] { return server_owner.data.find("\r\n.\r\n") != std::string::npos; }));
    EXPECT_EQ(server_owner.data, "Subject: tls\r\n\r\nsecret\r\n.\r\n");
    server_owner.data.clear();
    server.out() += "250 2.0.0 queued under TLS\r\n";
    server.want_flush();
    ASSERT_TRUE(h.run_until([&] { return server_owner.data == "QUIT\r\n"; }));
    ASSERT_EQ(owner.dones.size(), 1U);
    EXPECT_EQ(owner.dones[0].outcome.kind, protocol::outcome_kind::accepted);
    EXPECT_EQ(owner.dones[0].hop.tls.rfind("TLSv1.3 ", 0), 0U) << owner.dones[0].hop.tls;
    server.out() += "221 Bye\r\n";
    server.want_flush();
    // The client answers with close_notify after the 221: the server hears the TLS end.
    ASSERT_TRUE(h.run_until([&] { return !server_owner.ends.empty(); }));
    EXPECT_EQ(server_owner.ends[0], core::stream_end::tls_closed);
    ASSERT_EQ(owner.events, (std::vector<std::string>{"ready", "done 8", "closed"}));
    EXPECT_EQ(owner.closes[0].reason, protocol::close_reason::quit);
    ASSERT_TRUE(h.run_until([&] { return c->retirable(); }));
    server.abandon();
    ASSERT_TRUE(h.run_until([&] { return server_owner.finished == 1; }));
}

// The next hop answers the ClientHello with plaintext: the handshake failed on TLS itself,
// which the pool answers with a plaintext retry (tls_protocol_failure); no job was taken.
TEST_F(OutboundTlsTest, HandshakeFailingOnTlsItselfIsReportedAsAProtocolFailure) {
    job(9, {"b@example.net"}, "x\r\n");
    open(protocol::tls_use::when_offered);
    up_to_starttls();
    say("220 2.0.0 Ready to start TLS\r\n");
    std::string hello;
    ASSERT_TRUE(h.run_until([&] {
        core::testing::stream_harness::read_available(peer, hello);
        return !hello.empty();
    })) << "no ClientHello";
    EXPECT_EQ(hello[0], '\x16') << "a TLS handshake record";
    say("this is not TLS at all, is it?\r\n");
    ASSERT_TRUE(h.run_until([&] { return !owner.closes.empty(); }));
    ASSERT_EQ(owner.events, (std::vector<std::string>{"closed"}));
    const close_report& r = owner.closes[0];
    EXPECT_TRUE(r.before_greeting);
    EXPECT_EQ(r.reason, protocol::close_reason::tls_failed);
    EXPECT_TRUE(r.tls_protocol_failure);
    EXPECT_EQ(r.tls_use, protocol::tls_use::when_offered);
    EXPECT_EQ(r.why.rfind("TLS handshake with mx.test.invalid [127.0.0.1:" + port_text() + "] for example.net failed: ", 0),
              0U)
        << r.why;
    EXPECT_EQ(owner.jobs.size(), 1U);
    ASSERT_TRUE(h.run_until([&] { return c->retirable(); }));
}

// The next hop hangs up on the ClientHello: lost during the handshake (something an attacker on
// the path can cause), so no plaintext retry.
TEST_F(OutboundTlsTest, ConnectionLostDuringTheHandshakeIsNoProtocolFailure) {
    open(protocol::tls_use::when_offered);
    up_to_starttls();
    say("220 2.0.0 Ready to start TLS\r\n");
    std::string hello;
    ASSERT_TRUE(h.run_until([&] {
        core::testing::stream_harness::read_available(peer, hello);
        return !hello.empty();
    }));
    ::shutdown(peer, SHUT_RDWR);
    ASSERT_TRUE(h.run_until([&] { return !owner.closes.empty(); }));
    const close_report& r = owner.closes[0];
    EXPECT_TRUE(r.before_greeting);
    EXPECT_EQ(r.reason, protocol::close_reason::tls_failed);
    EXPECT_FALSE(r.tls_protocol_failure);
    ASSERT_TRUE(h.run_until([&] { return c->retirable(); }));
}


// A job whose body is no longer cached: the connection reads the message record back from the
// origin's spool segment and sends it byte-exact; a record that fails its checksum (or a
// segment that is gone) fails the attempt as a transient failure with the reason, before any
// command is sent.
class OutboundSpoolTest : public OutboundTest {
protected:
    void SetUp() override {
        OutboundTest::SetUp();
        char tmpl[] = "/tmp/ringrelay-outbound-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir = tmpl;
    }
    void TearDown() override {
        OutboundTest::TearDown();
        std::filesystem::remove_all(dir);
    }
    // Writes segment 7 holding `text` as message `tag`'s record after some filler; points the
    // job at it and drops the cached copy. `damage` (if set) is applied to the file's bytes.
    void spool_job(test_job& j, const std::string& text, bool corrupt = false,
                   const std::function<void(std::string& file, std::size_t record_at)>& damage = {}) {
        protocol::envelope env;
        env.queue_id = j.job.outbound.tag;
        env.mail_from = "a@example.org";
        env.rcpt_to = j.job.rcpt_to;
        std::string file(100, 'f');
        const std::uint64_t offset = file.size();
        encode_message_record(file, env, "127.0.0.1", 1, text, salt);
        file += text;
        if (corrupt) file[file.size() - 3] ^= 0x20;
        const std::uint64_t record_size = file.size() - offset;
        if (damage) damage(file, offset);
        std::ofstream(dir + "/" + segment_file_name(7), std::ios::binary) << file;
        j.job.where = record_location{7, offset, record_size, salt};
        j.job.message_size = text.size();
        j.job.spool_dir = &dir;
        j.cache.reset();
    }
    static constexpr std::uint32_t salt = 0x1234abcd;
    std::string dir;
};

TEST_F(OutboundSpoolTest, ABodyNoLongerCachedIsReadBackFromTheSpoolByteExact) {
    const std::string text = "Subject: from disk\r\n\r\n" + std::string(50'000, 'z') + "\r\n";
    test_job& j = job(5, {"b@example.net"}, "not this");
    spool_job(j, text);
    open();
    accept_peer();
    say("220 mx ESMTP\r\n");
    EXPECT_EQ(expect("\r\n"), "EHLO relay.test.invalid\r\n");
    say("250-mx\r\n250 PIPELINING\r\n");
    EXPECT_EQ(expect("DATA\r\n"), "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
    say("250 ok\r\n250 ok\r\n354 go\r\n");
    EXPECT_EQ(expect("\r\n.\r\n"), text + ".\r\n");
    say("250 2.0.0 queued\r\n");
    ASSERT_EQ(owner.dones.size(), 1U);
    EXPECT_EQ(owner.dones[0].outcome.kind, protocol::outcome_kind::accepted);
}

TEST_F(OutboundSpoolTest, ACorruptRecordFailsTheAttemptTransientlyWithTheReason) {
    test_job& j = job(6, {"b@example.net"}, "x");
    spool_job(j, "Subject: s\r\n\r\nbody\r\n", true);
    owner.quit_when_idle = true;
    open();
    accept_peer();
    say("220 mx ESMTP\r\n");
    EXPECT_EQ(expect("\r\n"), "EHLO relay.test.invalid\r\n");
    say("250-mx\r\n250 PIPELINING\r\n");
    ASSERT_TRUE(h.run_until([&] { return owner.dones.size() == 1; }));
    const auto& d = owner.dones[0];
    EXPECT_EQ(d.outcome.kind, protocol::outcome_kind::transient_failure) << "deferred, never bounced";
    EXPECT_EQ(d.outcome.reply.origin, protocol::reply_origin::local);
    EXPECT_EQ(d.outcome.reply.code, 451);
    EXPECT_NE(d.outcome.reply.text.find("cannot read the message back from the spool"), std::string::npos);
    EXPECT_NE(d.outcome.reply.text.find("checksum mismatch"), std::string::npos) << d.outcome.reply.text;
    EXPECT_EQ(expect("\r\n"), "QUIT\r\n") << "no MAIL was sent for it";
}

TEST_F(OutboundSpoolTest, AMissingSegmentFailsTheAttemptTransiently) {
    test_job& j = job(8, {"b@example.net"}, "x");
    spool_job(j, "Subject: s\r\n\r\nbody\r\n");
    std::filesystem::remove(dir + "/" + segment_file_name(7));
    open();
    accept_peer();
    say("220 mx ESMTP\r\n");
    EXPECT_EQ(expect("\r\n"), "EHLO relay.test.invalid\r\n");
    say("250-mx\r\n250 PIPELINING\r\n");
    ASSERT_TRUE(h.run_until([&] { return owner.dones.size() == 1; }));
    EXPECT_EQ(owner.dones[0].outcome.kind, protocol::outcome_kind::transient_failure);
    EXPECT_NE(owner.dones[0].outcome.reply.text.find("No such file or directory"), std::string::npos)
        << owner.dones[0].outcome.reply.text;
}

// ---- large bodies, in pieces (issue 15) --------------------------------------------------

// About 3 MiB (twelve pieces): numbered lines, every seventh starting with '.', so that dots
// are stuffed on both sides of many piece boundaries.
std::string large_text() {
    std::string text = "Subject: large\r\n\r\n";
    for (int i = 0; text.size() < 3 * 1024 * 1024; ++i) {
        if (i % 7 == 0) text += '.';
        text += "line " + std::to_string(i) + " of a large message, long enough to matter\r\n";
    }
    return text;
}

std::string stuffed(std::string_view text) {
    std::string out;
    protocol::append_normalized_body(out, text, protocol::dot_stuffing::on);
    return out;
}

// The reactor's registered buffers, as a shard has them (fewer: a test streams one body at a
// time). Up to the 354 with PIPELINING (and CHUNKING when asked: up to the RCPT replies).
class OutboundLargeTest : public OutboundSpoolTest {
protected:
    void SetUp() override {
        OutboundSpoolTest::SetUp();
        if (IsSkipped() || HasFatalFailure()) return;
        ASSERT_FALSE(pool().init(h.ring.ring(), 2, body_piece_size)) << "registering 2 x 256 KiB";
        ASSERT_EQ(pool().capacity(), 2U);
    }
    core::fixed_buffer_pool& pool() { return h.ring.fixed_buffers(); }
    // The reads of `j`'s record in pieces: one per body_piece_size, the last shorter.
    static std::uint64_t piece_reads(const test_job& j) {
        return (j.job.where.size + body_piece_size - 1) / body_piece_size;
    }
    void up_to_body(bool chunking = false) {
        accept_peer();
        say("220 mx ESMTP\r\n");
        EXPECT_EQ(expect("\r\n"), "EHLO relay.test.invalid\r\n");
        if (chunking) {
            say("250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n");
            EXPECT_EQ(expect("RCPT TO:<b@example.net>\r\n"), "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n");
            say("250 ok\r\n250 ok\r\n");
        } else {
            say("250-mx\r\n250 PIPELINING\r\n");
            EXPECT_EQ(expect("DATA\r\n"), "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
            say("250 ok\r\n250 ok\r\n354 go\r\n");
        }
    }
    // The BDAT chunks read from the peer until the LAST one is complete, joined; their count.
    std::string read_chunks(std::size_t& chunks) {
        std::string wire;
        std::string joined;
        chunks = 0;
        bool last = false;
        EXPECT_TRUE(h.run_until([&] {
            core::testing::stream_harness::read_available(peer, wire);
            for (;;) {  // whole chunks off the front of `wire`
                const std::size_t eol = wire.find("\r\n");
                if (eol == std::string::npos) break;
                std::string command = wire.substr(0, eol);
                EXPECT_EQ(command.rfind("BDAT ", 0), 0U) << command;
                const bool is_last = command.ends_with(" LAST");
                const std::size_t length = std::stoul(command.substr(5));
                if (wire.size() < eol + 2 + length) break;
                joined.append(wire, eol + 2, length);
                wire.erase(0, eol + 2 + length);
                ++chunks;
                if (is_last) last = true;
            }
            return last;
        }, 20'000));
        EXPECT_EQ(wire, "") << "nothing behind the LAST chunk";
        return joined;
    }
};

// From the spool: twelve reads of 256 KiB, given as the output drains; the wire carries exactly
// what the whole-body path sends.
TEST_F(OutboundLargeTest, ALargeBodyIsReadFromTheSpoolInPiecesAndSentByteExact) {
    const std::string text = large_text();
    test_job& j = job(21, {"b@example.net"}, "not this");
    spool_job(j, text);
    open();
    up_to_body();
    std::string got;
    ASSERT_TRUE(h.read_until(peer, got, "\r\n.\r\n", 20'000));
    EXPECT_TRUE(got == stuffed(text) + ".\r\n") << "differs: " << got.size() << " octets, expected "
                                                 << stuffed(text).size() + 3;
    say("250 2.0.0 queued\r\n");
    ASSERT_EQ(owner.dones.size(), 1U);
    EXPECT_EQ(owner.dones[0].outcome.kind, protocol::outcome_kind::accepted);
    EXPECT_EQ(expect("\r\n"), "QUIT\r\n");
    // Every piece was read into a registered buffer (READ_FIXED), which is back in the pool.
    EXPECT_EQ(pool().counters().fixed_reads, piece_reads(j));
    EXPECT_EQ(pool().counters().plain_reads, 0U);
    EXPECT_EQ(pool().counters().acquired, 1U) << "one buffer held for the whole body";
    EXPECT_EQ(pool().available(), pool().capacity());
}

// Every registered buffer is taken (other connections streaming): the body is read into plain
// memory with plain reads, and goes out the same, byte-exact.
TEST_F(OutboundLargeTest, WithNoRegisteredBufferFreeTheBodyIsReadIntoPlainMemoryByteExact) {
    const core::fixed_buffer taken[2] = {pool().acquire(), pool().acquire()};
    ASSERT_TRUE(taken[0] && taken[1]);
    const std::string text = large_text();
    test_job& j = job(27, {"b@example.net"}, "not this");
    spool_job(j, text);
    open();
    up_to_body();
    std::string got;
    ASSERT_TRUE(h.read_until(peer, got, "\r\n.\r\n", 20'000));
    EXPECT_TRUE(got == stuffed(text) + ".\r\n") << "differs: " << got.size() << " octets, expected "
                                                 << stuffed(text).size() + 3;
    say("250 2.0.0 queued\r\n");
    ASSERT_EQ(owner.dones.size(), 1U);
    EXPECT_EQ(owner.dones[0].outcome.kind, protocol::outcome_kind::accepted);
    EXPECT_EQ(pool().counters().fixed_reads, 0U);
    EXPECT_EQ(pool().counters().plain_reads, piece_reads(j));
    EXPECT_EQ(pool().counters().exhausted, 1U) << "asked once, for the body";
    for (const core::fixed_buffer& b : taken) pool().release(b);
}

// CHUNKING: one BDAT per piece read, the last LAST; together the message byte-exact.
TEST_F(OutboundLargeTest, ALargeBodyFromTheSpoolGoesAsOneBdatChunkPerPiece) {
    const std::string text = large_text();
    test_job& j = job(22, {"b@example.net"}, "not this");
    spool_job(j, text);
    open();
    up_to_body(true);
    std::size_t chunks = 0;
    const std::string joined = read_chunks(chunks);
    EXPECT_TRUE(joined == text) << joined.size() << " octets, expected " << text.size();
    // The first read holds the record's header and envelope too: one piece more than the body.
    EXPECT_GE(chunks, text.size() / body_piece_size);
    EXPECT_LE(chunks, text.size() / body_piece_size + 2);
    EXPECT_EQ(pool().counters().fixed_reads, piece_reads(j));
    std::string replies;
    for (std::size_t i = 0; i < chunks; ++i) replies += "250 2.0.0 ok\r\n";
    say(replies);
    ASSERT_EQ(owner.dones.size(), 1U);
    EXPECT_EQ(owner.dones[0].outcome.kind, protocol::outcome_kind::accepted);
    EXPECT_EQ(pool().available(), pool().capacity());
}

// A cached large body is given in slices of the cache's copy: several chunks, never one.
TEST_F(OutboundLargeTest, ALargeCachedBodyIsGivenInPiecesToo) {
    const std::string text = large_text();
    job(23, {"b@example.net"}, text);
    open();
    up_to_body(true);
    std::size_t chunks = 0;
    const std::string joined = read_chunks(chunks);
    EXPECT_TRUE(joined == text);
    EXPECT_EQ(chunks, (text.size() + body_piece_size - 1) / body_piece_size);
    EXPECT_EQ(pool().counters().fixed_reads + pool().counters().plain_reads, 0U) << "nothing read";
    std::string replies;
    for (std::size_t i = 0; i < chunks; ++i) replies += "250 2.0.0 ok\r\n";
    say(replies);
    ASSERT_EQ(owner.dones.size(), 1U);
    EXPECT_EQ(owner.dones[0].outcome.kind, protocol::outcome_kind::accepted);
}

// A byte flipped in the middle of the record: the pieces before the last go out (the CRC can
// only be known at the end), the end of data never does; the connection is aborted, so the
// next hop discards the partial message, and the job is deferred with the spool's reason.
TEST_F(OutboundLargeTest, ACorruptionMidRecordAbortsWithoutEndingTheDataAndDefers) {
    const std::string text = large_text();
    test_job& j = job(24, {"b@example.net", "c@example.net"}, "not this");
    spool_job(j, text, false, [](std::string& file, std::size_t at) { file[at + (file.size() - at) / 2] ^= 0x20; });
    open();
    accept_peer();
    say("220 mx ESMTP\r\n");
    expect("EHLO relay.test.invalid\r\n");
    say("250-mx\r\n250 PIPELINING\r\n");
    expect("DATA\r\n");
    say("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
    std::string rest;
    ASSERT_TRUE(h.read_to_end(peer, rest, 20'000)) << "the connection was not dropped";
    EXPECT_GT(rest.size(), text.size() / 2) << "the body was being sent";
    const std::string wire = stuffed(text);
    EXPECT_LT(rest.size(), wire.size()) << "the last piece waits for the CRC";
    // What left is the body's beginning, the flipped octet with it: only the missing end of
    // data keeps the next hop from taking it.
    std::size_t differing = 0;
    for (std::size_t i = 0; i < rest.size() && i < wire.size(); ++i) differing += rest[i] != wire[i] ? 1 : 0;
    EXPECT_EQ(differing, 1U);
    EXPECT_EQ(rest.find("\r\n.\r\n"), std::string::npos) << "the data was ended";
    EXPECT_EQ(rest.find("QUIT"), std::string::npos);
    ASSERT_TRUE(h.run_until([&] { return !owner.closes.empty(); }));
    ASSERT_EQ(owner.events, (std::vector<std::string>{"ready", "done 24", "closed"}));
    const auto& d = owner.dones[0];
    EXPECT_EQ(d.outcome.kind, protocol::outcome_kind::transient_failure) << "deferred, never bounced";
    EXPECT_EQ(d.outcome.reply.origin, protocol::reply_origin::local);
    EXPECT_EQ(d.outcome.reply.code, 451);
    EXPECT_EQ(d.outcome.reply.text, "cannot read the message back from the spool (" + dir + "/" +
                                        segment_file_name(7) + " offset 100): checksum mismatch");
    ASSERT_EQ(d.outcome.recipients.size(), 2U);
    for (const auto& r : d.outcome.recipients) EXPECT_EQ(r.kind, protocol::outcome_kind::transient_failure);
    EXPECT_EQ(owner.closes[0].reason, protocol::close_reason::body_abandoned);
    ASSERT_TRUE(h.run_until([&] { return c->retirable(); }));
    EXPECT_GT(pool().counters().fixed_reads, 1U);
    EXPECT_EQ(pool().available(), pool().capacity()) << "the aborted body's buffer is back";
}

// The segment ends in the middle of the record (a read comes back short mid-body): the same.
TEST_F(OutboundLargeTest, AShortReadMidBodyAbortsWithoutEndingTheData) {
    const std::string text = large_text();
    test_job& j = job(25, {"b@example.net"}, "not this");
    spool_job(j, text, false, [](std::string& file, std::size_t at) { file.resize(at + (file.size() - at) / 2); });
    open();
    up_to_body();
    std::string rest;
    ASSERT_TRUE(h.read_to_end(peer, rest, 20'000)) << "the connection was not dropped";
    EXPECT_EQ(rest.find("\r\n.\r\n"), std::string::npos) << "the data was ended";
    EXPECT_LT(rest.size(), text.size() / 2 + body_piece_size);
    EXPECT_TRUE(stuffed(text).starts_with(rest));
    ASSERT_TRUE(h.run_until([&] { return !owner.closes.empty(); }));
    ASSERT_EQ(owner.dones.size(), 1U);
    EXPECT_EQ(owner.dones[0].outcome.kind, protocol::outcome_kind::transient_failure);
    EXPECT_NE(owner.dones[0].outcome.reply.text.find("the segment ends short of the record"), std::string::npos)
        << owner.dones[0].outcome.reply.text;
    ASSERT_TRUE(h.run_until([&] { return c->retirable(); }));
    EXPECT_EQ(pool().available(), pool().capacity()) << "the aborted body's buffer is back";
}

// A damaged header is found on the first read, before any command: no transaction at all.
TEST_F(OutboundLargeTest, ALargeRecordWithABadHeaderFailsBeforeMail) {
    const std::string text = large_text();
    test_job& j = job(26, {"b@example.net"}, "not this");
    spool_job(j, text, false, [](std::string& file, std::size_t at) { file[at] ^= 0x01; });
    open();
    accept_peer();
    say("220 mx ESMTP\r\n");
    expect("EHLO relay.test.invalid\r\n");
    say("250-mx\r\n250 PIPELINING\r\n");
    ASSERT_TRUE(h.run_until([&] { return owner.dones.size() == 1; }));
    EXPECT_EQ(owner.dones[0].outcome.kind, protocol::outcome_kind::transient_failure);
    EXPECT_NE(owner.dones[0].outcome.reply.text.find("no record magic"), std::string::npos)
        << owner.dones[0].outcome.reply.text;
    EXPECT_EQ(expect("\r\n"), "QUIT\r\n") << "no MAIL was sent for it";
    EXPECT_EQ(pool().counters().fixed_reads, 1U);
    EXPECT_EQ(pool().available(), pool().capacity());
}

}  // namespace
}  // namespace ringrelay::queue
