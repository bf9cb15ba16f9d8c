// tests/protocol/client_session_test.cc: the SMTP client session against scripted fake servers
// (a table of canned replies and the exact client bytes each must provoke): pipelined and
// lock-step peers, partial and total RCPT failure, DATA refusal, 4xx/5xx at every step, SIZE,
// dot-stuffing and line-end normalization, BDAT, HELO fallback, connection reuse, multi-line
// replies, and hostile peers. Every script is also run with the server's bytes split at every
// offset and byte by byte; the client's bytes and the outcomes must not change.
#include "protocol/client_session.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <new>
#include <ostream>
#include <string>
#include <vector>

// Counts every allocation through the global operator new (this test binary only).
namespace {
std::size_t allocation_count = 0;
}  // namespace

void* operator new(std::size_t n) {
    ++allocation_count;
    if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
    throw std::bad_alloc();
}
// GCC 12 sees the malloc inside the replaced operator new and flags the matching free.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace ringrelay::protocol {
namespace {

std::size_t allocations() noexcept { return allocation_count; }

using namespace std::string_literals;

// What the fake host does after a step's reply was fed (STARTTLS, RFC 3207).
enum class then_do : std::uint8_t {
    nothing,
    tls_established,  // the handshake the 220 asked for completed
    tls_failed,       // it failed
};

// One exchange: the server sends `reply` (then the host does `then`); the client must then
// have written exactly `expect`.
struct step {
    std::string reply;
    std::string expect;
    then_do then = then_do::nothing;
};

struct message_spec {
    std::uint64_t tag = 1;
    std::string from = "sender@example.com";
    std::vector<std::string> rcpts = {"b@example.org"};
    std::string body = "Subject: t\r\n\r\nhello\r\n";
    body_kind body_type = body_kind::seven_bit;
    utf8_envelope utf8 = utf8_envelope::ascii;
};

outbound_message view(const message_spec& m) {
    return outbound_message{m.tag, m.from, m.rcpts, m.body, m.body_type, m.utf8};
}

std::string kind_name(outcome_kind k) {
    switch (k) {
    case outcome_kind::accepted: return "accepted";
    case outcome_kind::transient_failure: return "transient";
    case outcome_kind::permanent_failure: return "permanent";
    case outcome_kind::protocol_error: return "protocol_error";
    case outcome_kind::not_attempted: return "not_attempted";
    }
    return "?";
}

std::string describe(const outcome_reply& r) {
    std::string s = r.origin == reply_origin::peer ? "peer " : r.origin == reply_origin::local ? "local " : "none ";
    s += std::to_string(r.code);
    if (r.enhanced.present()) {
        s += " [" + std::to_string(r.enhanced.status_class) + "." + std::to_string(r.enhanced.subject) + "." +
             std::to_string(r.enhanced.detail) + "]";
    }
    return s + " " + r.text;
}

// A message outcome as one comparable line per message and recipient.
std::string describe(const message_outcome& o) {
    std::string s = "#" + std::to_string(o.tag) + " " + kind_name(o.kind) + " " + describe(o.reply) + "\n";
    for (const recipient_outcome& r : o.recipients) {
        s += "  " + kind_name(r.kind) + " rcpt=" + std::to_string(r.rcpt_code) + " " + describe(r.reply) + "\n";
    }
    return s;
}

struct result {
    std::string sent;      // everything the client wrote
    std::string outcomes;  // describe() of each outcome, in order
    std::vector<message_outcome> raw;
    bool closed = false;
    close_reason why = close_reason::none;
    bool script_followed = true;
    std::size_t not_consumed = 0;  // server octets feed() left unread (behind STARTTLS's 220)

    bool operator==(const result& o) const {
        return sent == o.sent && outcomes == o.outcomes && closed == o.closed && why == o.why &&
               script_followed == o.script_followed && not_consumed == o.not_consumed;
    }
};

enum class quit_first : std::uint8_t { no, yes };

// Submits `messages` (and asks for QUIT) before the greeting, then plays `script`; the server's
// bytes are cut at the global offsets in `cuts`.
result play(const client_config& config, const std::vector<message_spec>& messages, const std::vector<step>& script,
            const std::vector<std::size_t>& cuts, quit_first q = quit_first::yes) {
    client_session s(config);
    result res;
    std::string out;
    for (const message_spec& m : messages) s.submit(view(m), out);
    if (q == quit_first::yes) s.quit(out);
    if (!out.empty()) res.script_followed = false;  // nothing before the greeting
    std::size_t offset = 0;
    std::size_t next_cut = 0;
    for (const step& st : script) {
        std::string_view reply = st.reply;
        const std::size_t end = offset + reply.size();
        while (!reply.empty()) {
            while (next_cut < cuts.size() && cuts[next_cut] <= offset) ++next_cut;
            const std::size_t piece_end = next_cut < cuts.size() && cuts[next_cut] < end ? cuts[next_cut] : end;
            const std::size_t n = piece_end - offset;
            const std::size_t used = s.feed(reply.substr(0, n), out);
            if (used > n) res.script_followed = false;
            res.not_consumed += n - used;  // a real host discards these (RFC 3207 §5)
            reply.remove_prefix(n);
            offset += n;
        }
        if (st.then == then_do::tls_established) {
            if (!s.tls_requested()) res.script_followed = false;
            s.on_tls_established(out);
        } else if (st.then == then_do::tls_failed) {
            if (!s.tls_requested()) res.script_followed = false;
            s.on_tls_failed("certificate verify failed");
        }
        if (out != st.expect) res.script_followed = false;
        res.sent += out;
        out.clear();
    }
    for (const message_outcome& o : s.outcomes()) {
        res.outcomes += describe(o);
        res.raw.push_back(o);
    }
    res.closed = s.closed();
    res.why = s.why_closed();
    return res;
}

// Plays whole, split once at every offset, and byte by byte; all runs must agree.
result play_everywhere(const client_config& config, const std::vector<message_spec>& messages,
                       const std::vector<step>& script, quit_first q = quit_first::yes) {
    const result whole = play(config, messages, script, {}, q);
    std::size_t total = 0;
    for (const step& st : script) total += st.reply.size();
    for (std::size_t k = 1; k < total; ++k) {
        const result split = play(config, messages, script, {k}, q);
        if (!(split == whole)) {
            ADD_FAILURE() << "differs when split at " << k << "\nwhole:\n" << whole.sent << whole.outcomes
                          << "\nsplit:\n" << split.sent << split.outcomes;
            return whole;
        }
    }
    std::vector<std::size_t> every;
    for (std::size_t k = 1; k < total; ++k) every.push_back(k);
    const result bytes = play(config, messages, script, every, q);
    EXPECT_TRUE(bytes == whole) << "differs byte by byte\nwhole:\n"
                                << whole.sent << whole.outcomes << "\nbytes:\n"
                                << bytes.sent << bytes.outcomes;
    return whole;
}

client_config test_config() {
    client_config c;
    c.helo_name = "relay.example.com";
    return c;
}

const std::string greeting = "220 mx.example.net ESMTP\r\n";
const std::string ehlo = "EHLO relay.example.com\r\n";
// PIPELINING, no CHUNKING.
const std::string ehlo_pipelining =
    "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n"
    "250 SMTPUTF8\r\n";
// Everything, CHUNKING included.
const std::string ehlo_all =
    "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
    "250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n250 CHUNKING\r\n";
// Lock-step: no PIPELINING, no SIZE.
const std::string ehlo_plain = "250-mx.example.net\r\n250 8BITMIME\r\n";

const std::string body = "Subject: t\r\n\r\nhello\r\n";  // 21 octets
const std::string mail_sized = "MAIL FROM:<sender@example.com> SIZE=21\r\n";
const std::string mail_plain = "MAIL FROM:<sender@example.com>\r\n";
const std::string rcpt_b = "RCPT TO:<b@example.org>\r\n";
const std::string rcpt_c = "RCPT TO:<c@example.org>\r\n";
const std::string queued = "250 2.0.0 Ok: queued as 1A2B\r\n";
const std::string bye = "221 2.0.0 Bye\r\n";

message_spec two_rcpts() {
    message_spec m;
    m.rcpts = {"b@example.org", "c@example.org"};
    return m;
}


TEST(ClientSession, DeliversPipelinedMessageInOneGroup) {
    const result r = play_everywhere(test_config(), {two_rcpts()},
        {{greeting, ehlo},
         {ehlo_pipelining, mail_sized + rcpt_b + rcpt_c + "DATA\r\n"},
         {"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n", body + ".\r\n"},
         {queued, "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.outcomes,
              "#1 accepted peer 250 [2.0.0] 2.0.0 Ok: queued as 1A2B\n"
              "  accepted rcpt=250 peer 250 [2.0.0] 2.0.0 Ok: queued as 1A2B\n"
              "  accepted rcpt=250 peer 250 [2.0.0] 2.0.0 Ok: queued as 1A2B\n");
    EXPECT_TRUE(r.closed);
    EXPECT_EQ(r.why, close_reason::quit);
}

TEST(ClientSession, RecordsExtensionsFromEhloReply) {
    client_session s(test_config());
    std::string out;
    s.feed(greeting, out);
    s.feed(ehlo_all, out);
    const peer_extensions& x = s.extensions();
    EXPECT_TRUE(x.pipelining);
    EXPECT_TRUE(x.chunking);
    EXPECT_TRUE(x.eight_bit_mime);
    EXPECT_TRUE(x.smtputf8);
    EXPECT_TRUE(x.enhanced_status_codes);
    EXPECT_TRUE(x.starttls);
    EXPECT_TRUE(x.size_declared);
    EXPECT_EQ(x.size_limit, 10000u);
    EXPECT_EQ(s.state(), client_state::idle);
}

TEST(ClientSession, WaitsForEachReplyWithoutPipelining) {
    const result r = play_everywhere(test_config(), {two_rcpts()},
        {{greeting, ehlo},
         {ehlo_plain, mail_plain},
         {"250 2.1.0 Ok\r\n", rcpt_b},
         {"250 2.1.5 Ok\r\n", rcpt_c},
         {"250 2.1.5 Ok\r\n", "DATA\r\n"},
         {"354 go ahead\r\n", body + ".\r\n"},
         {"250 ok queued\r\n", "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    ASSERT_EQ(r.raw.size(), 1u);
    EXPECT_EQ(r.raw[0].kind, outcome_kind::accepted);
    EXPECT_EQ(r.raw[0].reply.text, "ok queued");
}

TEST(ClientSession, DoesNotPipelineWhenConfigSaysNever) {
    client_config c = test_config();
    c.pipelining = extension_use::never;
    const result r = play_everywhere(c, {message_spec{}},
        {{greeting, ehlo},
         {ehlo_pipelining, mail_sized},
         {"250 2.1.0 Ok\r\n", rcpt_b},
         {"250 2.1.5 Ok\r\n", "DATA\r\n"},
         {"354 go ahead\r\n", body + ".\r\n"},
         {queued, "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.raw.at(0).kind, outcome_kind::accepted);
}

TEST(ClientSession, ReportsEachRecipientWhenSomeAreRefused) {
    const result r = play_everywhere(test_config(), {two_rcpts()},
        {{greeting, ehlo},
         {ehlo_pipelining, mail_sized + rcpt_b + rcpt_c + "DATA\r\n"},
         {"250 2.1.0 Ok\r\n550 5.1.1 <b@example.org>: unknown user\r\n250 2.1.5 Ok\r\n354 go\r\n", body + ".\r\n"},
         {queued, "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.outcomes,
              "#1 accepted peer 250 [2.0.0] 2.0.0 Ok: queued as 1A2B\n"
              "  permanent rcpt=550 peer 550 [5.1.1] 5.1.1 <b@example.org>: unknown user\n"
              "  accepted rcpt=250 peer 250 [2.0.0] 2.0.0 Ok: queued as 1A2B\n");
}

TEST(ClientSession, SendsLoneDotWhenAllRecipientsRefusedButDataGot354) {
    // RFC 2920 §3.1: the pipelined DATA was accepted, so the client ends it with "." alone.
    const result r = play_everywhere(test_config(), {two_rcpts()},
        {{greeting, ehlo},
         {ehlo_pipelining, mail_sized + rcpt_b + rcpt_c + "DATA\r\n"},
         {"250 2.1.0 Ok\r\n550 5.1.1 no b\r\n450 4.2.1 c busy\r\n354 go\r\n", ".\r\n"},
         {"554 5.5.1 no valid recipients\r\n", "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.outcomes,
              "#1 transient peer 450 [4.2.1] 4.2.1 c busy\n"
              "  permanent rcpt=550 peer 550 [5.1.1] 5.1.1 no b\n"
              "  transient rcpt=450 peer 450 [4.2.1] 4.2.1 c busy\n");
}

TEST(ClientSession, SendsRsetWhenAllRecipientsRefusedAndDataRefused) {
    const result r = play_everywhere(test_config(), {message_spec{}},
        {{greeting, ehlo},
         {ehlo_pipelining, mail_sized + rcpt_b + "DATA\r\n"},
         {"250 2.1.0 Ok\r\n550 5.1.1 no b\r\n554 5.5.1 no valid recipients\r\n", "RSET\r\n"},
         {"250 2.0.0 Ok\r\n", "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.outcomes, "#1 permanent peer 550 [5.1.1] 5.1.1 no b\n  permanent rcpt=550 peer 550 [5.1.1] 5.1.1 no b\n");
}

TEST(ClientSession, SendsNoDataWhenAllRecipientsRefusedInLockStep) {
    const result r = play_everywhere(test_config(), {two_rcpts()},
        {{greeting, ehlo},
         {ehlo_plain, mail_plain},
         {"250 2.1.0 Ok\r\n", rcpt_b},
         {"550 5.1.1 no b\r\n", rcpt_c},
         {"550 5.1.1 no c\r\n", "RSET\r\n"},
         {"250 2.0.0 Ok\r\n", "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.raw.at(0).kind, outcome_kind::permanent_failure);
    EXPECT_EQ(r.raw.at(0).recipients.at(1).reply.text, "5.1.1 no c");
}

TEST(ClientSession, FailsMessageWithDataRefusal) {
    const result r = play_everywhere(test_config(), {message_spec{}},
        {{greeting, ehlo},
         {ehlo_pipelining, mail_sized + rcpt_b + "DATA\r\n"},
         {"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n451 4.3.0 try later\r\n", "RSET\r\n"},
         {"250 2.0.0 Ok\r\n", "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.outcomes,
              "#1 transient peer 451 [4.3.0] 4.3.0 try later\n  transient rcpt=250 peer 451 [4.3.0] 4.3.0 try later\n");
}

// A failure at each step of a lock-step transaction with one recipient: the message's kind and
// reply, and what the client sends next.
struct failure_case {
    const char* name;
    std::vector<step> script;  // after greeting and EHLO
    outcome_kind kind;
    std::uint16_t code;

    friend void PrintTo(const failure_case& c, std::ostream* os) { *os << c.name; }
};

class ClientSessionFailure : public ::testing::TestWithParam<failure_case> {};

TEST_P(ClientSessionFailure, FailsMessageAndKeepsConnectionUsable) {
    const failure_case& c = GetParam();
    std::vector<step> script = {{greeting, ehlo}, {ehlo_plain, mail_plain}};
    script.insert(script.end(), c.script.begin(), c.script.end());
    // A second message follows on the same connection and is delivered.
    message_spec second;
    second.tag = 2;
    script.back().expect = mail_plain;
    script.push_back({"250 2.1.0 Ok\r\n", rcpt_b});
    script.push_back({"250 2.1.5 Ok\r\n", "DATA\r\n"});
    script.push_back({"354 go\r\n", body + ".\r\n"});
    script.push_back({queued, "QUIT\r\n"});
    script.push_back({bye, ""});
    const result r = play_everywhere(test_config(), {message_spec{}, second}, script);
    EXPECT_TRUE(r.script_followed) << r.sent;
    ASSERT_EQ(r.raw.size(), 2u);
    EXPECT_EQ(r.raw[0].kind, c.kind);
    EXPECT_EQ(r.raw[0].reply.code, c.code);
    EXPECT_EQ(r.raw[0].recipients.at(0).kind, c.kind);
    EXPECT_EQ(r.raw[1].kind, outcome_kind::accepted);
}

// clang-format off
const failure_case failure_cases[] = {
    {"MailTransient", {{"451 4.3.0 busy\r\n", ""}}, outcome_kind::transient_failure, 451},
    {"MailPermanent", {{"550 5.7.1 go away\r\n", ""}}, outcome_kind::permanent_failure, 550},
    {"RcptTransient", {{"250 2.1.0 Ok\r\n", rcpt_b}, {"450 4.2.0 greylisted\r\n", "RSET\r\n"}, {"250 Ok\r\n", ""}},
     outcome_kind::transient_failure, 450},
    {"RcptPermanent", {{"250 2.1.0 Ok\r\n", rcpt_b}, {"550 5.1.1 unknown\r\n", "RSET\r\n"}, {"250 Ok\r\n", ""}},
     outcome_kind::permanent_failure, 550},
    {"DataTransient", {{"250 2.1.0 Ok\r\n", rcpt_b}, {"250 2.1.5 Ok\r\n", "DATA\r\n"}, {"451 4.3.0 later\r\n", "RSET\r\n"},
                       {"250 Ok\r\n", ""}}, outcome_kind::transient_failure, 451},
    {"DataPermanent", {{"250 2.1.0 Ok\r\n", rcpt_b}, {"250 2.1.5 Ok\r\n", "DATA\r\n"}, {"554 5.5.1 no\r\n", "RSET\r\n"},
                       {"250 Ok\r\n", ""}}, outcome_kind::permanent_failure, 554},
    {"EndOfDataTransient", {{"250 2.1.0 Ok\r\n", rcpt_b}, {"250 2.1.5 Ok\r\n", "DATA\r\n"}, {"354 go\r\n", body + ".\r\n"},
                            {"452 4.3.1 full\r\n", ""}}, outcome_kind::transient_failure, 452},
    {"EndOfDataPermanent", {{"250 2.1.0 Ok\r\n", rcpt_b}, {"250 2.1.5 Ok\r\n", "DATA\r\n"}, {"354 go\r\n", body + ".\r\n"},
                            {"554 5.7.1 spam\r\n", ""}}, outcome_kind::permanent_failure, 554},
};
// clang-format on

INSTANTIATE_TEST_SUITE_P(Steps, ClientSessionFailure, ::testing::ValuesIn(failure_cases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(ClientSession, RefusesOversizedMessageWithoutSendingIt) {
    message_spec big;
    big.body = std::string(10001, 'x') + "\r\n";
    message_spec small;
    small.tag = 2;
    const result r = play_everywhere(test_config(), {big, small},
        {{greeting, ehlo},
         {ehlo_pipelining, mail_sized + rcpt_b + "DATA\r\n"},
         {"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n", body + ".\r\n"},
         {queued, "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    ASSERT_EQ(r.raw.size(), 2u);
    EXPECT_EQ(r.raw[0].kind, outcome_kind::permanent_failure);
    EXPECT_EQ(r.raw[0].reply.origin, reply_origin::local);
    EXPECT_EQ(r.raw[0].reply.code, 552);
    EXPECT_EQ(r.raw[0].reply.enhanced, (enhanced_status{5, 3, 4}));
    EXPECT_EQ(r.raw[1].kind, outcome_kind::accepted);
}

TEST(ClientSession, DotStuffsLinesAndTerminatesUnterminatedBody) {
    message_spec m;
    m.body = "line1\r\n.hidden\r\n..two\r\n.\r\nend";
    const std::string stuffed = "line1\r\n..hidden\r\n...two\r\n..\r\nend\r\n.\r\n";
    const result r = play_everywhere(test_config(), {m},
        {{greeting, ehlo},
         {ehlo_pipelining, "MAIL FROM:<sender@example.com> SIZE=31\r\n" + rcpt_b + "DATA\r\n"},
         {"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n", stuffed},
         {queued, "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.raw.at(0).kind, outcome_kind::accepted);
}

TEST(ClientSession, NormalizesBareLineEndsToCrlf) {
    message_spec m;
    m.body = "a\nb\rc\r\n\n.d";
    const result r = play_everywhere(test_config(), {m},
        {{greeting, ehlo},
         {ehlo_pipelining, "MAIL FROM:<sender@example.com> SIZE=15\r\n" + rcpt_b + "DATA\r\n"},
         {"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n", "a\r\nb\r\nc\r\n\r\n..d\r\n.\r\n"},
         {queued, "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
}

TEST(ClientSession, SendsBdatWhenChunkingOffered) {
    message_spec m;
    m.body = ".dot\r\nx";  // no stuffing for BDAT; the final line gets its CRLF
    const result r = play_everywhere(test_config(), {m},
        {{greeting, ehlo},
         {ehlo_all, "MAIL FROM:<sender@example.com> SIZE=9\r\n" + rcpt_b},
         {"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", "BDAT 9 LAST\r\n.dot\r\nx\r\n"},
         {"250 2.0.0 Ok: 9 octets\r\n", "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.raw.at(0).kind, outcome_kind::accepted);
}

TEST(ClientSession, FailsBdatRefusalAndResets) {
    const result r = play_everywhere(test_config(), {message_spec{}},
        {{greeting, ehlo},
         {ehlo_all, mail_sized + rcpt_b},
         {"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", "BDAT 21 LAST\r\n" + body},
         {"554 5.6.0 bad content\r\n", "RSET\r\n"},
         {"250 2.0.0 Ok\r\n", "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.raw.at(0).kind, outcome_kind::permanent_failure);
    EXPECT_EQ(r.raw.at(0).reply.code, 554);
}

TEST(ClientSession, UsesDataWhenChunkingDisallowed) {
    client_config c = test_config();
    c.chunking = extension_use::never;
    const result r = play_everywhere(c, {message_spec{}},
        {{greeting, ehlo},
         {ehlo_all, mail_sized + rcpt_b + "DATA\r\n"},
         {"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n", body + ".\r\n"},
         {queued, "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
}

TEST(ClientSession, FallsBackToHeloWhenEhloRefused) {
    const result r = play_everywhere(test_config(), {message_spec{}},
        {{greeting, ehlo},
         {"502 5.5.1 command not implemented\r\n", "HELO relay.example.com\r\n"},
         {"250 mx.example.net\r\n", mail_plain},
         {"250 Ok\r\n", rcpt_b},
         {"250 Ok\r\n", "DATA\r\n"},
         {"354 go\r\n", body + ".\r\n"},
         {queued, "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.raw.at(0).kind, outcome_kind::accepted);
}

TEST(ClientSession, RefusesEightBitMessageAfterHelo) {
    message_spec m;
    m.body_type = body_kind::eight_bit_mime;
    const result r = play_everywhere(test_config(), {m},
        {{greeting, ehlo}, {"500 5.5.2 what\r\n", "HELO relay.example.com\r\n"}, {"250 mx\r\n", "QUIT\r\n"}, {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.outcomes, "#1 permanent local 554 [5.6.3] 5.6.3 8-bit message but the peer does not offer 8BITMIME\n"
                          "  permanent rcpt=0 local 554 [5.6.3] 5.6.3 8-bit message but the peer does not offer 8BITMIME\n");
}

TEST(ClientSession, SendsMailParametersForEightBitAndUtf8) {
    message_spec m;
    m.body_type = body_kind::eight_bit_mime;
    m.utf8 = utf8_envelope::smtputf8;
    const result r = play_everywhere(test_config(), {m},
        {{greeting, ehlo},
         {ehlo_pipelining, "MAIL FROM:<sender@example.com> SIZE=21 BODY=8BITMIME SMTPUTF8\r\n" + rcpt_b + "DATA\r\n"},
         {"250 Ok\r\n250 Ok\r\n354 go\r\n", body + ".\r\n"},
         {queued, "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
}

TEST(ClientSession, QuitsWhenTempFailingEhloAndHoldsMessages) {
    const result r = play_everywhere(test_config(), {message_spec{}},
        {{greeting, ehlo}, {"454 4.7.0 not now\r\n", "QUIT\r\n"}, {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.why, close_reason::greeting_refused);
    EXPECT_EQ(r.raw.at(0).kind, outcome_kind::not_attempted);
    EXPECT_EQ(r.raw.at(0).reply.code, 454);
}

TEST(ClientSession, ReusesConnectionForThreeMessages) {
    // Transactions pipelined back to back (the default): each envelope follows the previous
    // message's end of data in the same write.
    std::vector<message_spec> messages(3);
    std::vector<step> script = {{greeting, ehlo}, {ehlo_pipelining, mail_sized + rcpt_b + "DATA\r\n"}};
    for (std::size_t i = 0; i < 3; ++i) {
        messages[i].tag = i + 1;
        script.push_back({"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n",
                          body + ".\r\n" + (i < 2 ? mail_sized + rcpt_b + "DATA\r\n" : ""s)});
        script.push_back({"250 2.0.0 Ok: queued as " + std::to_string(i + 1) + "\r\n", i < 2 ? ""s : "QUIT\r\n"s});
    }
    script.push_back({bye, ""});
    const result r = play_everywhere(test_config(), messages, script);
    EXPECT_TRUE(r.script_followed) << r.sent;
    ASSERT_EQ(r.raw.size(), 3u);
    for (std::size_t i = 0; i < 3; ++i) {
        EXPECT_EQ(r.raw[i].tag, i + 1);
        EXPECT_EQ(r.raw[i].kind, outcome_kind::accepted);
        EXPECT_EQ(r.raw[i].reply.text, "2.0.0 Ok: queued as " + std::to_string(i + 1));
    }
    EXPECT_EQ(r.sent.find("RSET"), std::string::npos);
}

// Messages told apart by their recipient and subject: tag i goes to r<i>@example.org.
message_spec numbered(std::uint64_t i) {
    message_spec m;
    m.tag = i;
    // Appended piece by piece: GCC 12's -Wrestrict misfires on "r" + to_string(i) + ... at -O3.
    std::string rcpt = "r";
    rcpt.append(std::to_string(i)).append("@example.org");
    m.rcpts = {rcpt};
    m.body = "Subject: ";
    m.body.append(std::to_string(i)).append("\r\n\r\nhello\r\n");  // 21 octets for i < 10
    return m;
}
std::string rcpt_of(std::uint64_t i) { return "RCPT TO:<r" + std::to_string(i) + "@example.org>\r\n"; }
std::string envelope_of(std::uint64_t i) { return mail_sized + rcpt_of(i) + "DATA\r\n"; }
std::string body_of(std::uint64_t i) { return "Subject: " + std::to_string(i) + "\r\n\r\nhello\r\n"; }
std::string queued_as(std::uint64_t i) { return "250 2.0.0 Ok: queued as Q" + std::to_string(i) + "\r\n"; }
const std::string envelope_ok = "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n";

TEST(ClientSession, PipelinesNextEnvelopeBehindEndOfData) {
    const result r = play_everywhere(test_config(), {numbered(1), numbered(2)},
        {{greeting, ehlo},
         {ehlo_pipelining, envelope_of(1)},
         {envelope_ok, body_of(1) + ".\r\n" + envelope_of(2)},  // RFC 2920 §3.1: content opens a group
         {queued_as(1), ""},                                      // message 2 is already on its way
         {envelope_ok, body_of(2) + ".\r\n"},
         {queued_as(2), "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.outcomes,
              "#1 accepted peer 250 [2.0.0] 2.0.0 Ok: queued as Q1\n"
              "  accepted rcpt=250 peer 250 [2.0.0] 2.0.0 Ok: queued as Q1\n"
              "#2 accepted peer 250 [2.0.0] 2.0.0 Ok: queued as Q2\n"
              "  accepted rcpt=250 peer 250 [2.0.0] 2.0.0 Ok: queued as Q2\n");
    EXPECT_EQ(r.why, close_reason::quit);
}

TEST(ClientSession, PipelinesThreeMessagesWithRepliesInOneRead) {
    // The end-of-data reply of one message and the envelope replies of the next arrive together.
    const result r = play_everywhere(test_config(), {numbered(1), numbered(2), numbered(3)},
        {{greeting, ehlo},
         {ehlo_pipelining, envelope_of(1)},
         {envelope_ok, body_of(1) + ".\r\n" + envelope_of(2)},
         {queued_as(1) + "250 2.1.0 Ok\r\n550 5.1.1 <r2@example.org>: no such user\r\n",  // RCPT of #2 refused
          ""},
         {"554 5.5.1 no valid recipients\r\n", "RSET\r\n"},  // #2's DATA: body never sent
         {"250 2.0.0 Ok\r\n", envelope_of(3)},                  // #3 only after the RSET's reply
         {envelope_ok, body_of(3) + ".\r\n"},
         {queued_as(3), "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.outcomes,
              "#1 accepted peer 250 [2.0.0] 2.0.0 Ok: queued as Q1\n"
              "  accepted rcpt=250 peer 250 [2.0.0] 2.0.0 Ok: queued as Q1\n"
              "#2 permanent peer 550 [5.1.1] 5.1.1 <r2@example.org>: no such user\n"
              "  permanent rcpt=550 peer 550 [5.1.1] 5.1.1 <r2@example.org>: no such user\n"
              "#3 accepted peer 250 [2.0.0] 2.0.0 Ok: queued as Q3\n"
              "  accepted rcpt=250 peer 250 [2.0.0] 2.0.0 Ok: queued as Q3\n");
}

TEST(ClientSession, PipelinesEachOfThreeMessagesBehindThePrevious) {
    const result r = play_everywhere(test_config(), {numbered(1), numbered(2), numbered(3)},
        {{greeting, ehlo},
         {ehlo_pipelining, envelope_of(1)},
         {envelope_ok, body_of(1) + ".\r\n" + envelope_of(2)},
         {queued_as(1) + envelope_ok, body_of(2) + ".\r\n" + envelope_of(3)},
         {queued_as(2), ""},
         {envelope_ok, body_of(3) + ".\r\n"},
         {queued_as(3), "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    ASSERT_EQ(r.raw.size(), 3u);
    for (std::uint64_t i = 1; i <= 3; ++i) {
        EXPECT_EQ(r.raw[i - 1].tag, i);
        EXPECT_EQ(r.raw[i - 1].kind, outcome_kind::accepted);
        EXPECT_EQ(r.raw[i - 1].reply.text, "2.0.0 Ok: queued as Q" + std::to_string(i));
    }
    EXPECT_EQ(r.sent.find("RSET"), std::string::npos);
}

TEST(ClientSession, FailsOnlyFirstMessageWhenItsEndOfDataIsRefused) {
    // The "." ends the transaction whatever its reply (RFC 5321 §4.1.1.4): no RSET, and the
    // pipelined MAIL of #2 is valid.
    const result r = play_everywhere(test_config(), {numbered(1), numbered(2)},
        {{greeting, ehlo},
         {ehlo_pipelining, envelope_of(1)},
         {envelope_ok, body_of(1) + ".\r\n" + envelope_of(2)},
         {"451 4.3.0 try later\r\n" + envelope_ok, body_of(2) + ".\r\n"},
         {queued_as(2), "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.outcomes,
              "#1 transient peer 451 [4.3.0] 4.3.0 try later\n"
              "  transient rcpt=250 peer 451 [4.3.0] 4.3.0 try later\n"
              "#2 accepted peer 250 [2.0.0] 2.0.0 Ok: queued as Q2\n"
              "  accepted rcpt=250 peer 250 [2.0.0] 2.0.0 Ok: queued as Q2\n");
    EXPECT_EQ(r.sent.find("RSET"), std::string::npos);
}

TEST(ClientSession, ResetsSecondMessageWhoseRecipientsAreAllRefused) {
    // #1 accepted; #2's only RCPT refused and its DATA refused: RSET, as for a lone message.
    const result r = play_everywhere(test_config(), {numbered(1), numbered(2)},
        {{greeting, ehlo},
         {ehlo_pipelining, envelope_of(1)},
         {envelope_ok, body_of(1) + ".\r\n" + envelope_of(2)},
         {queued_as(1) + "250 2.1.0 Ok\r\n450 4.2.1 mailbox busy\r\n554 5.5.1 no valid recipients\r\n", "RSET\r\n"},
         {"250 2.0.0 Ok\r\n", "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.outcomes,
              "#1 accepted peer 250 [2.0.0] 2.0.0 Ok: queued as Q1\n"
              "  accepted rcpt=250 peer 250 [2.0.0] 2.0.0 Ok: queued as Q1\n"
              "#2 transient peer 450 [4.2.1] 4.2.1 mailbox busy\n"
              "  transient rcpt=450 peer 450 [4.2.1] 4.2.1 mailbox busy\n");
}

TEST(ClientSession, EndsSecondMessageWithLoneDotWhenItsRecipientsAreRefusedButDataGot354) {
    const result r = play_everywhere(test_config(), {numbered(1), numbered(2), numbered(3)},
        {{greeting, ehlo},
         {ehlo_pipelining, envelope_of(1)},
         {envelope_ok, body_of(1) + ".\r\n" + envelope_of(2)},
         {queued_as(1) + "250 2.1.0 Ok\r\n550 5.1.1 no\r\n354 go\r\n", ".\r\n"},  // nothing behind a lone "."
         {"554 5.5.1 no valid recipients\r\n", envelope_of(3)},
         {envelope_ok, body_of(3) + ".\r\n"},
         {queued_as(3), "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    ASSERT_EQ(r.raw.size(), 3u);
    EXPECT_EQ(r.raw[0].kind, outcome_kind::accepted);
    EXPECT_EQ(r.raw[1].kind, outcome_kind::permanent_failure);
    EXPECT_EQ(r.raw[1].reply.text, "5.1.1 no");
    EXPECT_EQ(r.raw[2].kind, outcome_kind::accepted);
    EXPECT_EQ(r.sent.find("RSET"), std::string::npos);
}

TEST(ClientSession, FailsBothOpenMessagesOnShutdownAfterEndOfData) {
    // 421 answers #1's "." while #2's MAIL is outstanding: both were started, so both are
    // transient (never not_attempted); #3 was never sent.
    const result r = play_everywhere(test_config(), {numbered(1), numbered(2), numbered(3)},
        {{greeting, ehlo},
         {ehlo_pipelining, envelope_of(1)},
         {envelope_ok, body_of(1) + ".\r\n" + envelope_of(2)},
         {"421 4.3.2 shutting down\r\n", ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_TRUE(r.closed);
    EXPECT_EQ(r.why, close_reason::peer_shutdown);
    EXPECT_EQ(r.outcomes,
              "#1 transient peer 421 [4.3.2] 4.3.2 shutting down\n"
              "  transient rcpt=250 peer 421 [4.3.2] 4.3.2 shutting down\n"
              "#2 transient peer 421 [4.3.2] 4.3.2 shutting down\n"
              "  transient rcpt=0 peer 421 [4.3.2] 4.3.2 shutting down\n"
              "#3 not_attempted peer 421 [4.3.2] 4.3.2 shutting down\n"
              "  not_attempted rcpt=0 peer 421 [4.3.2] 4.3.2 shutting down\n");
}

TEST(ClientSession, FailsOnlySecondMessageOnShutdownAfterFirstIsQueued) {
    const result r = play_everywhere(test_config(), {numbered(1), numbered(2)},
        {{greeting, ehlo},
         {ehlo_pipelining, envelope_of(1)},
         {envelope_ok, body_of(1) + ".\r\n" + envelope_of(2)},
         {queued_as(1) + "250 2.1.0 Ok\r\n421 4.3.2 shutting down\r\n", ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.why, close_reason::peer_shutdown);
    EXPECT_EQ(r.outcomes,
              "#1 accepted peer 250 [2.0.0] 2.0.0 Ok: queued as Q1\n"
              "  accepted rcpt=250 peer 250 [2.0.0] 2.0.0 Ok: queued as Q1\n"
              "#2 transient peer 421 [4.3.2] 4.3.2 shutting down\n"
              "  transient rcpt=0 peer 421 [4.3.2] 4.3.2 shutting down\n");
}

TEST(ClientSession, ReportsBothOpenMessagesWhenConnectionLostAfterEndOfData) {
    client_session s(test_config());
    std::string out;
    const message_spec m1 = numbered(1), m2 = numbered(2), m3 = numbered(3);
    s.submit(view(m1), out);
    s.submit(view(m2), out);
    s.submit(view(m3), out);
    s.feed(greeting, out);
    s.feed(ehlo_pipelining, out);
    out.clear();
    s.feed(envelope_ok, out);
    EXPECT_EQ(out, body_of(1) + ".\r\n" + envelope_of(2));
    s.on_connection_lost();
    EXPECT_EQ(s.why_closed(), close_reason::connection_lost);
    ASSERT_EQ(s.outcomes().size(), 3u);
    EXPECT_EQ(s.outcomes()[0].kind, outcome_kind::protocol_error);  // data may have been taken
    EXPECT_EQ(s.outcomes()[1].kind, outcome_kind::protocol_error);  // its MAIL was sent
    EXPECT_EQ(s.outcomes()[2].kind, outcome_kind::not_attempted);
    EXPECT_EQ(s.pending(), 0u);
}

TEST(ClientSession, WaitsWithLocallyRefusedMessageUntilTheOpenOneIsDone) {
    // #2 is over the peer's SIZE: it cannot be pipelined, and its outcome must not overtake #1's.
    message_spec big = numbered(2);
    big.body = std::string(10001, 'x') + "\r\n";
    const result r = play_everywhere(test_config(), {numbered(1), big, numbered(3)},
        {{greeting, ehlo},
         {ehlo_pipelining, envelope_of(1)},
         {envelope_ok, body_of(1) + ".\r\n"},
         {queued_as(1), envelope_of(3)},
         {envelope_ok, body_of(3) + ".\r\n"},
         {queued_as(3), "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    ASSERT_EQ(r.raw.size(), 3u);
    EXPECT_EQ(r.raw[0].tag, 1u);
    EXPECT_EQ(r.raw[0].kind, outcome_kind::accepted);
    EXPECT_EQ(r.raw[1].tag, 2u);
    EXPECT_EQ(r.raw[1].reply.code, 552);
    EXPECT_EQ(r.raw[2].tag, 3u);
    EXPECT_EQ(r.raw[2].kind, outcome_kind::accepted);
}

TEST(ClientSession, SubmitBehindEndOfDataSendsEnvelopeAtOnce) {
    client_session s(test_config());
    std::string out;
    const message_spec m1 = numbered(1), m2 = numbered(2);
    s.feed(greeting, out);
    s.feed(ehlo_pipelining, out);
    out.clear();
    s.submit(view(m1), out);
    EXPECT_EQ(out, envelope_of(1));
    out.clear();
    s.feed(envelope_ok, out);
    EXPECT_EQ(out, body_of(1) + ".\r\n");
    out.clear();
    s.submit(view(m2), out);  // #1 awaits only its end-of-data reply
    EXPECT_EQ(out, envelope_of(2));
    out.clear();
    s.feed(queued_as(1) + envelope_ok, out);
    EXPECT_EQ(out, body_of(2) + ".\r\n");
    ASSERT_EQ(s.outcomes().size(), 1u);
    EXPECT_EQ(s.outcomes()[0].tag, 1u);
    EXPECT_EQ(s.outcomes()[0].kind, outcome_kind::accepted);
    EXPECT_EQ(s.pending(), 1u);
}

TEST(ClientSession, PipelinesNextEnvelopeBehindBdat) {
    // With CHUNKING the next MAIL and RCPTs follow BDAT LAST; its BDAT waits for their replies.
    const std::string mail_rcpt_2 = mail_sized + rcpt_of(2);
    const result r = play_everywhere(test_config(), {numbered(1), numbered(2)},
        {{greeting, ehlo},
         {ehlo_all, mail_sized + rcpt_of(1)},
         {"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", "BDAT 21 LAST\r\n" + body_of(1) + mail_rcpt_2},
         {"250 2.0.0 Ok: 21 octets\r\n", ""},
         {"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", "BDAT 21 LAST\r\n" + body_of(2)},
         {queued_as(2), "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    ASSERT_EQ(r.raw.size(), 2u);
    EXPECT_EQ(r.raw[0].kind, outcome_kind::accepted);
    EXPECT_EQ(r.raw[0].reply.text, "2.0.0 Ok: 21 octets");
    EXPECT_EQ(r.raw[1].kind, outcome_kind::accepted);
    EXPECT_EQ(r.raw[1].reply.text, "2.0.0 Ok: queued as Q2");
}

TEST(ClientSession, SendsNoBodyForPipelinedBdatMessageWhoseRecipientsAreRefused) {
    const result r = play_everywhere(test_config(), {numbered(1), numbered(2)},
        {{greeting, ehlo},
         {ehlo_all, mail_sized + rcpt_of(1)},
         {"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", "BDAT 21 LAST\r\n" + body_of(1) + mail_sized + rcpt_of(2)},
         {"250 2.0.0 Ok: 21 octets\r\n250 2.1.0 Ok\r\n550 5.1.1 no\r\n", "RSET\r\n"},
         {"250 2.0.0 Ok\r\n", "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    ASSERT_EQ(r.raw.size(), 2u);
    EXPECT_EQ(r.raw[0].kind, outcome_kind::accepted);
    EXPECT_EQ(r.raw[1].kind, outcome_kind::permanent_failure);
    EXPECT_EQ(r.raw[1].recipients.at(0).rcpt_code, 550);
}

TEST(ClientSession, ResendsEnvelopeMadeVoidByRefusedBdat) {
    // After a refused BDAT LAST the peer may still hold #1's transaction, and take #2's MAIL as
    // nested (503) or its RCPT as #1's: those replies are ignored, RSET clears everything, and
    // #2 starts over.
    const result r = play_everywhere(test_config(), {numbered(1), numbered(2)},
        {{greeting, ehlo},
         {ehlo_all, mail_sized + rcpt_of(1)},
         {"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", "BDAT 21 LAST\r\n" + body_of(1) + mail_sized + rcpt_of(2)},
         {"554 5.6.0 bad content\r\n", "RSET\r\n"},
         {"503 5.5.1 nested MAIL command\r\n250 2.1.5 Ok\r\n", ""},
         {"250 2.0.0 Ok\r\n", mail_sized + rcpt_of(2)},
         {"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", "BDAT 21 LAST\r\n" + body_of(2)},
         {queued_as(2), "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.outcomes,
              "#1 permanent peer 554 [5.6.0] 5.6.0 bad content\n"
              "  permanent rcpt=250 peer 554 [5.6.0] 5.6.0 bad content\n"
              "#2 accepted peer 250 [2.0.0] 2.0.0 Ok: queued as Q2\n"
              "  accepted rcpt=250 peer 250 [2.0.0] 2.0.0 Ok: queued as Q2\n");
}

TEST(ClientSession, FailsVoidEnvelopeTransientlyWhenRsetIsRefused) {
    const result r = play_everywhere(test_config(), {numbered(1), numbered(2), numbered(3)},
        {{greeting, ehlo},
         {ehlo_all, mail_sized + rcpt_of(1)},
         {"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", "BDAT 21 LAST\r\n" + body_of(1) + mail_sized + rcpt_of(2)},
         {"451 4.3.0 disk full\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", "RSET\r\n"},
         {"554 5.5.1 no\r\n", "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.why, close_reason::reset_refused);
    ASSERT_EQ(r.raw.size(), 3u);
    EXPECT_EQ(r.raw[0].kind, outcome_kind::transient_failure);
    EXPECT_EQ(r.raw[0].reply.code, 451);
    EXPECT_EQ(r.raw[1].kind, outcome_kind::transient_failure);  // its MAIL was sent
    EXPECT_EQ(r.raw[1].recipients.at(0).rcpt_code, 0);         // the ignored 250 is not its
    EXPECT_EQ(r.raw[2].kind, outcome_kind::not_attempted);
}

TEST(ClientSession, WaitsForRsetReplyBeforeNextEnvelope) {
    // #1's BDAT LAST was refused and RSET is outstanding when #2 is submitted: #2's MAIL waits
    // for the RSET's reply (a refused RSET leaves the peer's state unknown).
    client_session s(test_config());
    std::string out;
    const message_spec m1 = numbered(1), m2 = numbered(2);
    s.feed(greeting, out);
    s.feed(ehlo_all, out);
    s.submit(view(m1), out);
    s.feed("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", out);
    out.clear();
    s.feed("554 5.6.0 bad content\r\n", out);
    EXPECT_EQ(out, "RSET\r\n");
    out.clear();
    s.submit(view(m2), out);
    EXPECT_EQ(out, "");
    s.feed("250 2.0.0 Ok\r\n", out);
    EXPECT_EQ(out, mail_sized + rcpt_of(2));
    ASSERT_EQ(s.outcomes().size(), 1u);
    EXPECT_EQ(s.outcomes()[0].kind, outcome_kind::permanent_failure);
}

TEST(ClientSession, KeepsTransactionsApartWhenConfigSaysNever) {
    client_config c = test_config();
    c.pipeline_transactions = extension_use::never;
    const result r = play_everywhere(c, {numbered(1), numbered(2)},
        {{greeting, ehlo},
         {ehlo_pipelining, envelope_of(1)},
         {envelope_ok, body_of(1) + ".\r\n"},
         {queued_as(1), envelope_of(2)},
         {envelope_ok, body_of(2) + ".\r\n"},
         {queued_as(2), "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    ASSERT_EQ(r.raw.size(), 2u);
    EXPECT_EQ(r.raw[1].kind, outcome_kind::accepted);
}

TEST(ClientSession, KeepsBdatTransactionsApartWhenConfigSaysNever) {
    client_config c = test_config();
    c.pipeline_transactions = extension_use::never;
    const result r = play_everywhere(c, {numbered(1), numbered(2)},
        {{greeting, ehlo},
         {ehlo_all, mail_sized + rcpt_of(1)},
         {"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", "BDAT 21 LAST\r\n" + body_of(1)},
         {queued_as(1), mail_sized + rcpt_of(2)},
         {"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", "BDAT 21 LAST\r\n" + body_of(2)},
         {queued_as(2), "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
}

TEST(ClientSession, KeepsTransactionsInLockStepWithoutPipelining) {
    message_spec m1 = numbered(1), m2 = numbered(2);
    const result r = play_everywhere(test_config(), {m1, m2},
        {{greeting, ehlo},
         {ehlo_plain, mail_plain},
         {"250 2.1.0 Ok\r\n", rcpt_of(1)},
         {"250 2.1.5 Ok\r\n", "DATA\r\n"},
         {"354 go\r\n", body_of(1) + ".\r\n"},  // nothing behind the "." without PIPELINING
         {queued_as(1), mail_plain},
         {"250 2.1.0 Ok\r\n", rcpt_of(2)},
         {"250 2.1.5 Ok\r\n", "DATA\r\n"},
         {"354 go\r\n", body_of(2) + ".\r\n"},
         {queued_as(2), "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    ASSERT_EQ(r.raw.size(), 2u);
    EXPECT_EQ(r.raw[0].kind, outcome_kind::accepted);
    EXPECT_EQ(r.raw[1].kind, outcome_kind::accepted);
}

TEST(ClientSession, TreatsReplyToEndOfDataInSameReadAsProtocolError) {
    // #1's "." and #2's envelope are written on the 354; a reply for them in the same read
    // cannot be theirs.
    client_session s(test_config());
    std::string out;
    const message_spec m1 = numbered(1), m2 = numbered(2);
    s.submit(view(m1), out);
    s.submit(view(m2), out);
    s.feed(greeting, out);
    s.feed(ehlo_pipelining, out);
    out.clear();
    s.feed(envelope_ok + queued_as(1) + "250 2.1.0 Ok\r\n", out);
    EXPECT_TRUE(s.closed());
    EXPECT_EQ(s.why_closed(), close_reason::protocol_error);
    ASSERT_EQ(s.outcomes().size(), 2u);
    EXPECT_EQ(s.outcomes()[0].kind, outcome_kind::protocol_error);
    EXPECT_EQ(s.outcomes()[1].kind, outcome_kind::protocol_error);
    EXPECT_EQ(s.outcomes()[1].recipients.at(0).rcpt_code, 0);
}

TEST(ClientSession, AllocatesNothingPerMessageOnceWarm) {
    // A caller keeping two messages submitted: the queues never drain, so they must be reused
    // (compacted), not grown.
    client_session s(test_config());
    std::string out;
    std::vector<message_spec> specs;
    for (std::uint64_t i = 1; i <= 4; ++i) specs.push_back(numbered(i));
    const std::string queued_reply = queued_as(1);
    s.feed(greeting, out);
    s.feed(ehlo_pipelining, out);
    s.submit(view(specs[0]), out);
    s.submit(view(specs[1]), out);
    std::size_t next = 2;
    std::size_t published = 0;
    std::size_t window_allocations = 0;
    for (int round = 0; round < 300; ++round) {
        if (round == 100) window_allocations = allocations();
        out.clear();
        s.feed(envelope_ok, out);
        out.clear();
        s.feed(queued_reply, out);
        published += s.outcomes().size();
        for (const message_outcome& o : s.outcomes()) {
            if (o.kind != outcome_kind::accepted) ADD_FAILURE() << describe(o);
        }
        s.release_outcomes();
        s.submit(view(specs[next % specs.size()]), out);
        ++next;
    }
    window_allocations = allocations() - window_allocations;
    EXPECT_EQ(window_allocations, 0u);
    EXPECT_EQ(published, 300u);
    EXPECT_EQ(s.pending(), 2u);
    EXPECT_FALSE(s.closed());
}

TEST(ClientSession, SubmitWhileIdleSendsMailAtOnce) {
    client_session s(test_config());
    std::string out;
    s.feed(greeting, out);
    out.clear();
    s.feed(ehlo_plain, out);
    EXPECT_TRUE(out.empty());
    EXPECT_EQ(s.state(), client_state::idle);
    const message_spec m;
    s.submit(view(m), out);
    EXPECT_EQ(out, mail_plain);
    EXPECT_EQ(s.state(), client_state::transaction);
    EXPECT_EQ(s.pending(), 1u);
}

TEST(ClientSession, KeepsMultiLineReplyText) {
    const result r = play_everywhere(test_config(), {two_rcpts()},
        {{greeting, ehlo},
         {ehlo_pipelining, mail_sized + rcpt_b + rcpt_c + "DATA\r\n"},
         {"250 2.1.0 Ok\r\n550-5.1.1 first line\r\n550 5.1.1 second line\r\n250 Ok\r\n354 go\r\n", body + ".\r\n"},
         {"250-2.0.0 Ok\r\n250 2.0.0 queued as 7\r\n", "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.raw.at(0).recipients.at(0).reply.text, "5.1.1 first line\n5.1.1 second line");
    EXPECT_EQ(r.raw.at(0).reply.text, "2.0.0 Ok\n2.0.0 queued as 7");
}

TEST(ClientSession, ReleasesOutcomesOnRequest) {
    client_session s(test_config());
    std::string out;
    s.feed(greeting, out);
    s.feed(ehlo_pipelining, out);
    message_spec big;
    big.body = std::string(20000, 'x');
    s.submit(view(big), out);
    ASSERT_EQ(s.outcomes().size(), 1u);
    s.release_outcomes();
    EXPECT_TRUE(s.outcomes().empty());
}

// Hostile peers: every one ends in a protocol error (or a 421 shutdown), never a crash, and no
// reply is ever attributed to a recipient whose RCPT was not sent.
struct hostile_case {
    const char* name;
    std::vector<step> script;  // after greeting; lock-step peer, two recipients, two messages
    close_reason why;
    outcome_kind first;

    friend void PrintTo(const hostile_case& c, std::ostream* os) { *os << c.name; }
};

class ClientSessionHostile : public ::testing::TestWithParam<hostile_case> {};

TEST_P(ClientSessionHostile, ClosesWithoutMisattribution) {
    const hostile_case& c = GetParam();
    std::vector<step> script = {{greeting, ehlo}};
    script.insert(script.end(), c.script.begin(), c.script.end());
    message_spec second = two_rcpts();
    second.tag = 2;
    const result r = play_everywhere(test_config(), {two_rcpts(), second}, script);
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_TRUE(r.closed);
    EXPECT_EQ(r.why, c.why);
    ASSERT_EQ(r.raw.size(), 2u);
    EXPECT_EQ(r.raw[0].kind, c.first);
    EXPECT_EQ(r.raw[1].kind, outcome_kind::not_attempted);
    for (const recipient_outcome& rc : r.raw[1].recipients) EXPECT_EQ(rc.rcpt_code, 0);
}

// clang-format off
const hostile_case hostile_cases[] = {
    {"OverlongReply", {{ehlo_plain, mail_plain}, {"250 " + std::string(600, 'x') + "\r\n", ""}},
     close_reason::protocol_error, outcome_kind::protocol_error},
    {"WrongContinuationCode", {{ehlo_plain, mail_plain}, {"250-2.1.0 Ok\r\n550 5.1.0 no\r\n", ""}},
     close_reason::protocol_error, outcome_kind::protocol_error},
    {"Garbage", {{ehlo_plain, mail_plain}, {"HTTP/1.1 400 Bad Request\r\n", ""}},
     close_reason::protocol_error, outcome_kind::protocol_error},
    {"ThreeHundredToMail", {{ehlo_plain, mail_plain}, {"354 what\r\n", ""}},
     close_reason::protocol_error, outcome_kind::protocol_error},
    {"TwoHundredToData", {{ehlo_plain, mail_plain}, {"250 Ok\r\n", rcpt_b}, {"250 Ok\r\n", rcpt_c},
                          {"250 Ok\r\n", "DATA\r\n"}, {"250 Ok\r\n", ""}},
     close_reason::protocol_error, outcome_kind::protocol_error},
    {"ShutdownDuringRcpt", {{ehlo_plain, mail_plain}, {"250 Ok\r\n", rcpt_b},
                            {"421 4.3.2 shutting down\r\n", ""}},
     close_reason::peer_shutdown, outcome_kind::transient_failure},
    {"EndOfDataGarbled", {{ehlo_plain, mail_plain}, {"250 Ok\r\n", rcpt_b}, {"250 Ok\r\n", rcpt_c},
                          {"250 Ok\r\n", "DATA\r\n"}, {"354 go\r\n", body + ".\r\n"}, {"2x0 what\r\n", ""}},
     close_reason::protocol_error, outcome_kind::protocol_error},
};
// clang-format on

INSTANTIATE_TEST_SUITE_P(Peers, ClientSessionHostile, ::testing::ValuesIn(hostile_cases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(ClientSession, TreatsReplyBeforeItsCommandAsProtocolError) {
    // Lock-step: the MAIL reply and a second reply arrive in one read. The second cannot be the
    // RCPT's (RCPT was not yet sent), so it must not be credited to recipient 0.
    client_session s(test_config());
    std::string out;
    const message_spec m = two_rcpts();
    s.submit(view(m), out);
    s.feed(greeting, out);
    s.feed(ehlo_plain, out);
    out.clear();
    s.feed("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", out);
    EXPECT_TRUE(s.closed());
    EXPECT_EQ(s.why_closed(), close_reason::protocol_error);
    ASSERT_EQ(s.outcomes().size(), 1u);
    EXPECT_EQ(s.outcomes()[0].kind, outcome_kind::protocol_error);
    EXPECT_EQ(s.outcomes()[0].recipients.at(0).rcpt_code, 0);
}

TEST(ClientSession, TreatsEhloReplyInGreetingReadAsProtocolError) {
    client_session s(test_config());
    std::string out;
    s.feed(greeting + ehlo_plain, out);
    EXPECT_TRUE(s.closed());
    EXPECT_EQ(s.why_closed(), close_reason::protocol_error);
}

TEST(ClientSession, TreatsUnsolicitedReplyWhenIdleAsProtocolError) {
    client_session s(test_config());
    std::string out;
    s.feed(greeting, out);
    s.feed(ehlo_plain, out);
    ASSERT_EQ(s.state(), client_state::idle);
    s.feed("250 surprise\r\n", out);
    EXPECT_TRUE(s.closed());
    EXPECT_EQ(s.why_closed(), close_reason::protocol_error);
}

TEST(ClientSession, ClosesOnUnsolicitedShutdownNotice) {
    client_session s(test_config());
    std::string out;
    s.feed(greeting, out);
    s.feed(ehlo_plain, out);
    s.feed("421 4.3.2 going down\r\n", out);
    EXPECT_TRUE(s.closed());
    EXPECT_EQ(s.why_closed(), close_reason::peer_shutdown);
    EXPECT_EQ(s.session_reply().code, 421);
}

TEST(ClientSession, QuitsOnRefusedGreetingWithoutAttempting) {
    client_session s(test_config());
    std::string out;
    const message_spec m;
    s.submit(view(m), out);
    s.feed("554 5.7.1 no service\r\n", out);
    EXPECT_EQ(out, "QUIT\r\n");
    EXPECT_EQ(s.state(), client_state::quitting);
    ASSERT_EQ(s.outcomes().size(), 1u);
    EXPECT_EQ(s.outcomes()[0].kind, outcome_kind::not_attempted);
    EXPECT_EQ(s.outcomes()[0].reply.code, 554);
    s.feed(bye, out);
    EXPECT_TRUE(s.closed());
    EXPECT_EQ(s.why_closed(), close_reason::greeting_refused);
}

TEST(ClientSession, ReportsProtocolErrorWhenConnectionLostAfterBody) {
    client_session s(test_config());
    std::string out;
    const message_spec m;
    s.submit(view(m), out);
    s.feed(greeting, out);
    s.feed(ehlo_pipelining, out);
    s.feed("250 Ok\r\n250 Ok\r\n354 go\r\n", out);
    s.on_connection_lost();
    EXPECT_TRUE(s.closed());
    EXPECT_EQ(s.why_closed(), close_reason::connection_lost);
    ASSERT_EQ(s.outcomes().size(), 1u);
    EXPECT_EQ(s.outcomes()[0].kind, outcome_kind::protocol_error);
}

TEST(ClientSession, ReportsSubmitAfterCloseAsNotAttempted) {
    client_session s(test_config());
    std::string out;
    s.on_connection_lost();
    const message_spec m;
    s.submit(view(m), out);
    EXPECT_TRUE(out.empty());
    ASSERT_EQ(s.outcomes().size(), 1u);
    EXPECT_EQ(s.outcomes()[0].kind, outcome_kind::not_attempted);
}

TEST(ClientSession, RefusesAddressThatWouldInjectCommands) {
    message_spec m;
    m.rcpts = {"b@example.org>\r\nRCPT TO:<evil@example.net"};
    const result r = play_everywhere(test_config(), {m}, {{greeting, ehlo}, {ehlo_plain, "QUIT\r\n"}, {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.raw.at(0).kind, outcome_kind::permanent_failure);
    EXPECT_EQ(r.raw.at(0).reply.origin, reply_origin::local);
}

TEST(ClientSession, QuitsAfterRsetIsRefused) {
    message_spec second;
    second.tag = 2;
    const result r = play_everywhere(test_config(), {message_spec{}, second},
        {{greeting, ehlo},
         {ehlo_plain, mail_plain},
         {"250 Ok\r\n", rcpt_b},
         {"550 5.1.1 no\r\n", "RSET\r\n"},
         {"500 5.5.1 what\r\n", "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.why, close_reason::reset_refused);
    ASSERT_EQ(r.raw.size(), 2u);
    EXPECT_EQ(r.raw[0].kind, outcome_kind::permanent_failure);
    EXPECT_EQ(r.raw[1].kind, outcome_kind::not_attempted);
}


// ---- STARTTLS (RFC 3207) and AUTH (RFC 4954) ------------------------------------------------

client_config tls_config(tls_use use) {
    client_config c = test_config();
    c.starttls = use;
    return c;
}

const std::string ready_for_tls = "220 2.0.0 Ready to start TLS\r\n";
// After TLS: PIPELINING, no STARTTLS, AUTH.
const std::string ehlo_after_tls =
    "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-AUTH PLAIN LOGIN\r\n250 ENHANCEDSTATUSCODES\r\n";
const std::string ehlo_starttls_auth =
    "250-mx.example.net\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n";

TEST(ClientSessionTls, StartsTlsWhenOfferedAndSaysEhloAgain) {
    const result r = play_everywhere(tls_config(tls_use::when_offered), {message_spec{}},
        {{greeting, ehlo},
         {ehlo_all, "STARTTLS\r\n"},
         {ready_for_tls, ehlo, then_do::tls_established},
         {ehlo_after_tls, mail_sized + rcpt_b + "DATA\r\n"},
         {"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n", body + ".\r\n"},
         {queued, "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.not_consumed, 0u);
    EXPECT_EQ(r.raw.at(0).kind, outcome_kind::accepted);
    EXPECT_EQ(r.why, close_reason::quit);
}

TEST(ClientSessionTls, SendsNothingBehindStartTls) {
    // STARTTLS is a synchronisation point: a message submitted before it waits for TLS, even
    // with PIPELINING offered.
    client_session s(tls_config(tls_use::when_offered));
    std::string out;
    const message_spec m;
    s.submit(view(m), out);
    s.feed(greeting, out);
    out.clear();
    s.feed(ehlo_pipelining + "", out);  // no STARTTLS listed: straight to MAIL
    EXPECT_EQ(out.substr(0, 11), "MAIL FROM:<");

    client_session t(tls_config(tls_use::when_offered));
    out.clear();
    t.submit(view(m), out);
    t.feed(greeting, out);
    out.clear();
    t.feed(ehlo_all, out);
    EXPECT_EQ(out, "STARTTLS\r\n");
    EXPECT_EQ(t.state(), client_state::starttls);
}

TEST(ClientSessionTls, LeavesRepliesInjectedBehindTheReadyReplyUnread) {
    // A man in the middle appends a forged EHLO reply behind the 220 (response injection): it
    // must not be read as SMTP, before or after the handshake, however the bytes are split.
    const std::string injected = "250-evil.example\r\n250 AUTH PLAIN\r\n";
    const result r = play_everywhere(tls_config(tls_use::when_offered), {message_spec{}},
        {{greeting, ehlo},
         {ehlo_all, "STARTTLS\r\n"},
         {ready_for_tls + injected, ehlo, then_do::tls_established},
         {ehlo_plain, mail_plain},
         {"250 2.1.0 Ok\r\n", rcpt_b},
         {"250 2.1.5 Ok\r\n", "DATA\r\n"},
         {"354 go\r\n", body + ".\r\n"},
         {queued, "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.not_consumed, injected.size());
    EXPECT_EQ(r.raw.at(0).kind, outcome_kind::accepted);
}

TEST(ClientSessionTls, ConsumesNothingWhileTheHandshakeRuns) {
    client_session s(tls_config(tls_use::when_offered));
    std::string out;
    s.feed(greeting, out);
    s.feed(ehlo_all, out);
    out.clear();
    EXPECT_EQ(s.feed(ready_for_tls + "250 2.0.0 forged\r\n", out), ready_for_tls.size());
    EXPECT_TRUE(s.tls_requested());
    EXPECT_EQ(s.feed("250 2.0.0 forged\r\n", out), 0u);
    EXPECT_EQ(s.state(), client_state::tls_handshake);
    EXPECT_TRUE(out.empty());
    s.on_tls_established(out);
    EXPECT_EQ(out, ehlo);
    EXPECT_TRUE(s.tls_active());
    out.clear();
    s.feed(ehlo_after_tls, out);
    EXPECT_FALSE(s.extensions().starttls);  // forgotten at TLS, not listed again
    EXPECT_TRUE(s.extensions().auth_plain);
    EXPECT_EQ(s.state(), client_state::idle);
}

TEST(ClientSessionTls, DoesNotStartTlsWhenConfigSaysNever) {
    const result r = play_everywhere(tls_config(tls_use::never), {message_spec{}},
        {{greeting, ehlo},
         {ehlo_all, mail_sized + rcpt_b},
         {"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", "BDAT 21 LAST\r\n" + body},
         {queued, "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.raw.at(0).kind, outcome_kind::accepted);
}

TEST(ClientSessionTls, RequiredTlsNotOfferedFailsEveryMessageWithoutMail) {
    message_spec second = two_rcpts();
    second.tag = 2;
    const result r = play_everywhere(tls_config(tls_use::required), {message_spec{}, second},
        {{greeting, ehlo},
         {ehlo_pipelining, "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.sent.find("MAIL"), std::string::npos);
    EXPECT_TRUE(r.closed);
    EXPECT_EQ(r.why, close_reason::tls_required);
    EXPECT_EQ(r.outcomes,
              "#1 transient local 451 [4.7.4] 4.7.4 TLS is required, but was not offered by the peer\n"
              "  transient rcpt=0 local 451 [4.7.4] 4.7.4 TLS is required, but was not offered by the peer\n"
              "#2 transient local 451 [4.7.4] 4.7.4 TLS is required, but was not offered by the peer\n"
              "  transient rcpt=0 local 451 [4.7.4] 4.7.4 TLS is required, but was not offered by the peer\n"
              "  transient rcpt=0 local 451 [4.7.4] 4.7.4 TLS is required, but was not offered by the peer\n");
}

TEST(ClientSessionTls, RequiredTlsAfterHeloFallbackFails) {
    const result r = play_everywhere(tls_config(tls_use::required), {message_spec{}},
        {{greeting, ehlo},
         {"502 5.5.1 EHLO not implemented\r\n", "HELO relay.example.com\r\n"},
         {"250 mx.example.net\r\n", "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.why, close_reason::tls_required);
    EXPECT_EQ(r.raw.at(0).kind, outcome_kind::transient_failure);
}

TEST(ClientSessionTls, RequiredTlsRefusedQuotesThePeer) {
    const result r = play_everywhere(tls_config(tls_use::required), {message_spec{}},
        {{greeting, ehlo},
         {ehlo_all, "STARTTLS\r\n"},
         {"454 4.7.0 TLS not available due to local problem\r\n", "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.why, close_reason::tls_required);
    EXPECT_EQ(r.outcomes,
              "#1 transient local 451 [4.7.5] 4.7.5 TLS is required, but the peer refused STARTTLS: 454 4.7.0 TLS "
              "not available due to local problem\n"
              "  transient rcpt=0 local 451 [4.7.5] 4.7.5 TLS is required, but the peer refused STARTTLS: 454 4.7.0 "
              "TLS not available due to local problem\n");
}

TEST(ClientSessionTls, OpportunisticTlsRefusedGoesOnInPlaintext) {
    const result r = play_everywhere(tls_config(tls_use::when_offered), {message_spec{}},
        {{greeting, ehlo},
         {ehlo_pipelining + "", mail_sized + rcpt_b + "DATA\r\n"},  // not offered: plaintext
         {"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n", body + ".\r\n"},
         {queued, "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.raw.at(0).kind, outcome_kind::accepted);
    const result refused = play_everywhere(tls_config(tls_use::when_offered), {message_spec{}},
        {{greeting, ehlo},
         {ehlo_all, "STARTTLS\r\n"},
         {"454 4.7.0 TLS not available\r\n", mail_sized + rcpt_b},
         {"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", "BDAT 21 LAST\r\n" + body},
         {queued, "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(refused.script_followed) << refused.sent;
    EXPECT_EQ(refused.raw.at(0).kind, outcome_kind::accepted);
}

TEST(ClientSessionTls, HandshakeFailureFailsMessagesTransientlyWithoutQuit) {
    const result r = play_everywhere(tls_config(tls_use::when_offered), {message_spec{}},
        {{greeting, ehlo},
         {ehlo_all, "STARTTLS\r\n"},
         {ready_for_tls, "", then_do::tls_failed}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_TRUE(r.closed);
    EXPECT_EQ(r.why, close_reason::tls_failed);
    EXPECT_EQ(r.outcomes,
              "#1 transient local 451 [4.7.5] 4.7.5 TLS handshake failed: certificate verify failed\n"
              "  transient rcpt=0 local 451 [4.7.5] 4.7.5 TLS handshake failed: certificate verify failed\n");
}

TEST(ClientSessionTls, ConnectionLostDuringHandshakeIsATlsFailure) {
    client_session s(tls_config(tls_use::when_offered));
    std::string out;
    const message_spec m;
    s.submit(view(m), out);
    s.feed(greeting, out);
    s.feed(ehlo_all, out);
    s.feed(ready_for_tls, out);
    s.on_connection_lost();
    EXPECT_EQ(s.why_closed(), close_reason::tls_failed);
    ASSERT_EQ(s.outcomes().size(), 1u);
    EXPECT_EQ(s.outcomes()[0].kind, outcome_kind::transient_failure);
    // A message handed over afterwards is not sent anywhere and fails the same way.
    s.submit(view(m), out);
    ASSERT_EQ(s.outcomes().size(), 2u);
    EXPECT_EQ(s.outcomes()[1].kind, outcome_kind::transient_failure);
}

client_config auth_config(tls_use use, auth_plaintext plain = auth_plaintext::refuse) {
    client_config c = tls_config(use);
    c.auth_user = "user";
    c.auth_password = "secret";
    c.auth_without_tls = plain;
    return c;
}

TEST(ClientSessionAuth, AuthenticatesWithPlainAfterTls) {
    const result r = play_everywhere(auth_config(tls_use::required), {message_spec{}},
        {{greeting, ehlo},
         {ehlo_starttls_auth, "STARTTLS\r\n"},  // AUTH listed, but never before TLS
         {ready_for_tls, ehlo, then_do::tls_established},
         {ehlo_after_tls, "AUTH PLAIN AHVzZXIAc2VjcmV0\r\n"},
         {"235 2.7.0 Authentication successful\r\n", mail_sized + rcpt_b + "DATA\r\n"},
         {"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n", body + ".\r\n"},
         {queued, "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.raw.at(0).kind, outcome_kind::accepted);
}

TEST(ClientSessionAuth, FallsBackToLogin) {
    const result r = play_everywhere(auth_config(tls_use::never, auth_plaintext::allow), {message_spec{}},
        {{greeting, ehlo},
         {"250-mx.example.net\r\n250 AUTH=LOGIN\r\n", "AUTH LOGIN\r\n"},
         {"334 VXNlcm5hbWU6\r\n", "dXNlcg==\r\n"},
         {"334 UGFzc3dvcmQ6\r\n", "c2VjcmV0\r\n"},
         {"235 2.7.0 ok\r\n", mail_plain},
         {"250 2.1.0 Ok\r\n", rcpt_b},
         {"250 2.1.5 Ok\r\n", "DATA\r\n"},
         {"354 go\r\n", body + ".\r\n"},
         {queued, "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.raw.at(0).kind, outcome_kind::accepted);
}

TEST(ClientSessionAuth, RefusedCredentialsDeferEveryMessage) {
    message_spec second;
    second.tag = 2;
    const result r = play_everywhere(auth_config(tls_use::never, auth_plaintext::allow), {message_spec{}, second},
        {{greeting, ehlo},
         {ehlo_after_tls, "AUTH PLAIN AHVzZXIAc2VjcmV0\r\n"},
         {"535 5.7.8 Authentication credentials invalid\r\n", "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.why, close_reason::auth_failed);
    EXPECT_EQ(r.outcomes,
              "#1 transient peer 535 [5.7.8] 5.7.8 Authentication credentials invalid\n"
              "  transient rcpt=0 peer 535 [5.7.8] 5.7.8 Authentication credentials invalid\n"
              "#2 transient peer 535 [5.7.8] 5.7.8 Authentication credentials invalid\n"
              "  transient rcpt=0 peer 535 [5.7.8] 5.7.8 Authentication credentials invalid\n");
}

TEST(ClientSessionAuth, NeverSendsCredentialsInClearByDefault) {
    const result r = play_everywhere(auth_config(tls_use::when_offered), {message_spec{}},
        {{greeting, ehlo},
         {ehlo_after_tls, "QUIT\r\n"},  // AUTH offered, STARTTLS not
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.sent.find("AUTH"), std::string::npos);
    EXPECT_EQ(r.why, close_reason::auth_failed);
    EXPECT_EQ(r.raw.at(0).reply.text, "4.7.0 AUTH credentials are not sent without TLS");
    EXPECT_EQ(r.raw.at(0).kind, outcome_kind::transient_failure);
}

TEST(ClientSessionAuth, FailsWhenNoKnownMechanismIsOffered) {
    const result r = play_everywhere(auth_config(tls_use::never, auth_plaintext::allow), {message_spec{}},
        {{greeting, ehlo},
         {"250-mx.example.net\r\n250 AUTH CRAM-MD5 XOAUTH2\r\n", "QUIT\r\n"},
         {bye, ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.why, close_reason::auth_failed);
    EXPECT_EQ(r.raw.at(0).kind, outcome_kind::transient_failure);
}

TEST(ClientSessionAuth, TreatsChallengeAfterInitialResponseAsProtocolError) {
    const result r = play_everywhere(auth_config(tls_use::never, auth_plaintext::allow), {message_spec{}},
        {{greeting, ehlo},
         {ehlo_after_tls, "AUTH PLAIN AHVzZXIAc2VjcmV0\r\n"},
         {"334 \r\n", ""}});
    EXPECT_TRUE(r.script_followed) << r.sent;
    EXPECT_EQ(r.why, close_reason::protocol_error);
    EXPECT_EQ(r.raw.at(0).kind, outcome_kind::not_attempted);
}

TEST(NormalizedBody, CountsWhatIsSent) {
    EXPECT_EQ(normalized_body_size(""), 0u);
    EXPECT_EQ(normalized_body_size("a"), 3u);
    EXPECT_EQ(normalized_body_size("a\r\n"), 3u);
    EXPECT_EQ(normalized_body_size("a\n\r"), 5u);
    EXPECT_EQ(normalized_body_size("\r\r\n"), 4u);
    std::string out;
    append_normalized_body(out, "\r\r\n.", dot_stuffing::on);
    EXPECT_EQ(out, "\r\n\r\n..\r\n");
}

}  // namespace
}  // namespace ringrelay::protocol
