// tests/protocol/dsn_test.cc: delivery status notifications (RFC 3464, RFC 6522, RFC 6533).
// Every DSN built here is parsed back (top-level header, boundary, the three parts, the report
// fields) and checked for CRLF-only line ends and lines of at most 998 octets.
#include "protocol/dsn.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ringrelay::protocol {
namespace {

using namespace std::string_literals;

using fields = std::vector<std::pair<std::string, std::string>>;

// Splits a header block into (name, unfolded value) pairs (RFC 5322 §2.2.3: CRLF before WSP
// is removed).
fields parse_fields(std::string_view block) {
    fields out;
    std::size_t pos = 0;
    while (pos < block.size()) {
        std::size_t end = block.find("\r\n", pos);
        if (end == std::string_view::npos) end = block.size();
        const std::string_view line = block.substr(pos, end - pos);
        pos = end + 2;
        if (line.empty()) continue;
        if ((line.front() == ' ' || line.front() == '\t') && !out.empty()) {
            out.back().second.append(line);
            continue;
        }
        const std::size_t colon = line.find(':');
        EXPECT_NE(colon, std::string_view::npos) << line;
        if (colon == std::string_view::npos) continue;
        std::string value(line.substr(colon + 1));
        if (!value.empty() && value.front() == ' ') value.erase(0, 1);
        out.emplace_back(std::string(line.substr(0, colon)), value);
    }
    return out;
}

std::optional<std::string> field(const fields& f, std::string_view name) {
    std::optional<std::string> found;
    for (const auto& [n, v] : f) {
        if (n == name) {
            EXPECT_FALSE(found.has_value()) << "repeated field " << name;
            found = v;
        }
    }
    return found;
}

std::size_t count_field(const fields& f, std::string_view name) {
    std::size_t n = 0;
    for (const auto& p : f) n += p.first == name ? 1 : 0;
    return n;
}

struct part {
    fields headers;
    std::string body;  // between the blank line and the CRLF of the next delimiter
};

struct parsed_dsn {
    fields headers;
    std::string boundary;
    std::vector<part> parts;
};

// Checks the line rules and parses the multipart structure (RFC 2046 §5.1.1).
parsed_dsn parse_dsn(const std::string& text) {
    parsed_dsn d;
    std::size_t line_start = 0;
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\r') {
            EXPECT_TRUE(i + 1 < text.size() && text[i + 1] == '\n') << "bare CR at " << i;
        } else if (text[i] == '\n') {
            EXPECT_TRUE(i > 0 && text[i - 1] == '\r') << "bare LF at " << i;
            EXPECT_LE(i - 1 - line_start, max_dsn_line) << "long line at " << line_start;
            line_start = i + 1;
        }
    }
    EXPECT_TRUE(text.ends_with("\r\n"));

    const std::size_t header_end = text.find("\r\n\r\n");
    EXPECT_NE(header_end, std::string::npos);
    if (header_end == std::string::npos) return d;
    d.headers = parse_fields(std::string_view(text).substr(0, header_end + 2));
    const std::string content_type = field(d.headers, "Content-Type").value_or("");
    const std::size_t b = content_type.find("boundary=\"");
    EXPECT_NE(b, std::string::npos) << content_type;
    if (b == std::string::npos) return d;
    d.boundary = content_type.substr(b + 10, content_type.find('"', b + 10) - (b + 10));
    EXPECT_FALSE(d.boundary.empty());
    EXPECT_LE(d.boundary.size(), 70u);  // RFC 2046 §5.1.1

    const std::string delimiter = "\r\n--" + d.boundary;
    const std::string body = text.substr(header_end + 2);  // keeps the CRLF before a first delimiter
    std::size_t pos = body.find(delimiter);
    EXPECT_NE(pos, std::string::npos);
    while (pos != std::string::npos) {
        const std::size_t after = pos + delimiter.size();
        if (body.compare(after, 4, "--\r\n") == 0) {
            EXPECT_EQ(after + 4, body.size()) << "text after the close delimiter";
            return d;
        }
        EXPECT_EQ(body.compare(after, 2, "\r\n"), 0);
        const std::size_t next = body.find(delimiter, after);
        EXPECT_NE(next, std::string::npos) << "no close delimiter";
        if (next == std::string::npos) return d;
        const std::string_view whole = std::string_view(body).substr(after + 2, next - after - 2);
        const std::size_t blank = whole.find("\r\n\r\n");
        EXPECT_NE(blank, std::string_view::npos);
        part p;
        p.headers = parse_fields(whole.substr(0, blank + 2));
        p.body = std::string(whole.substr(blank + 4));
        d.parts.push_back(std::move(p));
        pos = next;
    }
    return d;
}

// Splits a delivery-status body into its blocks (RFC 3464 §2.1: per-message, then one per
// recipient, separated by blank lines).
std::vector<fields> report_blocks(const std::string& body) {
    std::vector<fields> out;
    std::size_t pos = 0;
    while (pos < body.size()) {
        std::size_t end = body.find("\r\n\r\n", pos);
        if (end == std::string::npos) end = body.size();
        out.push_back(parse_fields(std::string_view(body).substr(pos, end - pos + 2)));
        pos = end + 4;
    }
    return out;
}

const std::string original_headers =
    "Received: from client.example.org (192.0.2.7)\r\n"
    "\tby mx.example.net (ringrelay) with ESMTP id 00000000000000AB\r\n"
    "From: Alice <alice@example.org>\r\n"
    "To: bob@example.com\r\n"
    "Subject: Hello\r\n"
    "Message-ID: <1@example.org>\r\n";
const std::string original = original_headers + "\r\nHi Bob,\r\nbody line\r\n";

dsn_recipient failed_bob() {
    dsn_recipient r;
    r.address = "bob@example.com";
    r.action = dsn_action::failed;
    r.status = "5.1.1";
    r.remote_mta = "mx1.example.com";
    r.diagnostic = "550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown";
    r.last_attempt_date = "Sat, 28 Nov 2026 03:40:00 +0000";
    return r;
}

dsn_input input_for(const std::vector<dsn_recipient>& rcpts, std::string_view message = original) {
    dsn_input in;
    in.original_queue_id = 0xAB;
    in.dsn_queue_id = 0x1234;
    in.reporting_mta = "mx.example.net";
    in.sender = "alice@example.org";
    in.arrival_date = "Sat, 28 Nov 2026 03:35:26 +0000";
    in.date = "Sat, 28 Nov 2026 03:40:01 +0000";
    in.recipients = rcpts;
    in.original_message = message;
    return in;
}

dsn_message build_ok(const dsn_input& in) {
    auto m = build_dsn(in);
    EXPECT_TRUE(m.has_value());
    if (!m) return {};
    return std::move(*m);
}

TEST(Dsn, FailedRecipientMakesCompleteReport) {
    const std::vector<dsn_recipient> rcpts{failed_bob()};
    const dsn_message m = build_ok(input_for(rcpts));
    const parsed_dsn d = parse_dsn(m.text);

    EXPECT_EQ(field(d.headers, "From"), "Mail Delivery System <MAILER-DAEMON@mx.example.net>");
    EXPECT_EQ(field(d.headers, "To"), "<alice@example.org>");
    EXPECT_EQ(field(d.headers, "Subject"), "Undelivered Mail Returned to Sender");
    EXPECT_EQ(field(d.headers, "Date"), "Sat, 28 Nov 2026 03:40:01 +0000");
    EXPECT_EQ(field(d.headers, "Message-ID"), "<0000000000001234.dsn@mx.example.net>");
    EXPECT_EQ(field(d.headers, "Auto-Submitted"), "auto-replied");
    EXPECT_EQ(field(d.headers, "MIME-Version"), "1.0");
    EXPECT_TRUE(field(d.headers, "Content-Type").value_or("").starts_with("multipart/report; report-type=delivery-status;"));
    EXPECT_FALSE(field(d.headers, "Content-Transfer-Encoding").has_value());
    EXPECT_NE(d.boundary.find("0000000000001234"), std::string::npos);
    EXPECT_EQ(m.body, body_type::seven_bit);
    EXPECT_FALSE(m.smtputf8);

    ASSERT_EQ(d.parts.size(), 3u);
    EXPECT_EQ(field(d.parts[0].headers, "Content-Type"), "text/plain; charset=us-ascii");
    EXPECT_EQ(field(d.parts[1].headers, "Content-Type"), "message/delivery-status");
    EXPECT_EQ(field(d.parts[2].headers, "Content-Type"), "text/rfc822-headers");

    const std::string& human = d.parts[0].body;
    EXPECT_NE(human.find("This is the mail system at host mx.example.net."), std::string::npos);
    EXPECT_NE(human.find("could not be delivered"), std::string::npos);
    EXPECT_NE(human.find("<bob@example.com>: host mx1.example.com said: 550 5.1.1"), std::string::npos);
    EXPECT_NE(human.find("User unknown"), std::string::npos);

    const auto blocks = report_blocks(d.parts[1].body);
    ASSERT_EQ(blocks.size(), 2u);
    EXPECT_EQ(field(blocks[0], "Reporting-MTA"), "dns; mx.example.net");
    EXPECT_EQ(field(blocks[0], "Arrival-Date"), "Sat, 28 Nov 2026 03:35:26 +0000");
    EXPECT_EQ(field(blocks[0], "X-Queue-ID"), "00000000000000AB");
    EXPECT_EQ(field(blocks[1], "Final-Recipient"), "rfc822; bob@example.com");
    EXPECT_FALSE(field(blocks[1], "Original-Recipient").has_value());
    EXPECT_EQ(field(blocks[1], "Action"), "failed");
    EXPECT_EQ(field(blocks[1], "Status"), "5.1.1");
    EXPECT_EQ(field(blocks[1], "Remote-MTA"), "dns; mx1.example.com");
    EXPECT_EQ(field(blocks[1], "Diagnostic-Code"),
              "smtp; 550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown");
    EXPECT_EQ(field(blocks[1], "Last-Attempt-Date"), "Sat, 28 Nov 2026 03:40:00 +0000");
    EXPECT_FALSE(field(blocks[1], "Will-Retry-Until").has_value());
    // RFC 3464 §2.3: Final-Recipient is the first field of a recipient block.
    EXPECT_EQ(blocks[1].front().first, "Final-Recipient");

    EXPECT_EQ(d.parts[2].body, original_headers);
    EXPECT_EQ(m.text.find("Hi Bob"), std::string::npos);
}

TEST(Dsn, MultipleRecipientsGetOneBlockEachInOrder) {
    dsn_recipient carol = failed_bob();
    carol.address = "carol@example.com";
    carol.status = "5.2.2";
    carol.diagnostic = "552 5.2.2 mailbox full";
    dsn_recipient dave = failed_bob();
    dave.address = "dave@example.net";
    dave.status = "5.4.4";
    dave.remote_mta = "";
    dave.diagnostic_kind = diagnostic_type::local;
    dave.diagnostic = "Host or domain name not found";
    const std::vector<dsn_recipient> rcpts{failed_bob(), carol, dave};
    const parsed_dsn d = parse_dsn(build_ok(input_for(rcpts)).text);
    ASSERT_EQ(d.parts.size(), 3u);
    const auto blocks = report_blocks(d.parts[1].body);
    ASSERT_EQ(blocks.size(), 4u);
    EXPECT_EQ(field(blocks[1], "Final-Recipient"), "rfc822; bob@example.com");
    EXPECT_EQ(field(blocks[2], "Final-Recipient"), "rfc822; carol@example.com");
    EXPECT_EQ(field(blocks[2], "Status"), "5.2.2");
    EXPECT_EQ(field(blocks[3], "Final-Recipient"), "rfc822; dave@example.net");
    EXPECT_FALSE(field(blocks[3], "Remote-MTA").has_value());
    EXPECT_EQ(field(blocks[3], "Diagnostic-Code"), "X-Ringrelay; Host or domain name not found");
    const std::string& human = d.parts[0].body;
    const std::size_t b = human.find("<bob@example.com>:");
    const std::size_t c = human.find("<carol@example.com>: host mx1.example.com said: 552 5.2.2 mailbox full");
    const std::size_t e = human.find("<dave@example.net>: Host or domain name not found");
    ASSERT_NE(b, std::string::npos);
    ASSERT_NE(c, std::string::npos);
    ASSERT_NE(e, std::string::npos);
    EXPECT_LT(b, c);
    EXPECT_LT(c, e);
}

TEST(Dsn, DelayedRecipientsMakeAWarning) {
    dsn_recipient r = failed_bob();
    r.action = dsn_action::delayed;
    r.status = "4.2.1";
    r.diagnostic = "451 4.2.1 try again later";
    r.will_retry_until = "Thu, 3 Dec 2026 03:35:26 +0000";
    const std::vector<dsn_recipient> rcpts{r};
    const parsed_dsn d = parse_dsn(build_ok(input_for(rcpts)).text);
    EXPECT_EQ(field(d.headers, "Subject"), "Delayed Mail (still being retried)");
    ASSERT_EQ(d.parts.size(), 3u);
    EXPECT_NE(d.parts[0].body.find("THIS IS A WARNING ONLY"), std::string::npos);
    EXPECT_NE(d.parts[0].body.find("still being retried until Thu, 3 Dec 2026"), std::string::npos);
    const auto blocks = report_blocks(d.parts[1].body);
    ASSERT_EQ(blocks.size(), 2u);
    EXPECT_EQ(field(blocks[1], "Action"), "delayed");
    EXPECT_EQ(field(blocks[1], "Status"), "4.2.1");
    EXPECT_EQ(field(blocks[1], "Will-Retry-Until"), "Thu, 3 Dec 2026 03:35:26 +0000");
}

TEST(Dsn, AnyFailedRecipientMakesABounce) {
    dsn_recipient delayed = failed_bob();
    delayed.address = "carol@example.com";
    delayed.action = dsn_action::delayed;
    delayed.status = "4.4.1";
    const std::vector<dsn_recipient> rcpts{delayed, failed_bob()};
    const parsed_dsn d = parse_dsn(build_ok(input_for(rcpts)).text);
    EXPECT_EQ(field(d.headers, "Subject"), "Undelivered Mail Returned to Sender");
    ASSERT_EQ(d.parts.size(), 3u);
    EXPECT_EQ(d.parts[0].body.find("WARNING"), std::string::npos);
}

TEST(Dsn, ExpiryIsAFailureWithATransientStatus) {
    dsn_recipient r = failed_bob();
    r.status = "4.4.7";  // RFC 3463 §3.5 delivery time expired
    r.diagnostic_kind = diagnostic_type::local;
    r.diagnostic = "delivery time expired; last reply: 451 4.3.0 try later";
    const std::vector<dsn_recipient> rcpts{r};
    const parsed_dsn d = parse_dsn(build_ok(input_for(rcpts)).text);
    ASSERT_EQ(d.parts.size(), 3u);
    const auto blocks = report_blocks(d.parts[1].body);
    ASSERT_EQ(blocks.size(), 2u);
    EXPECT_EQ(field(blocks[1], "Action"), "failed");
    EXPECT_EQ(field(blocks[1], "Status"), "4.4.7");
}

TEST(Dsn, HostileDiagnosticCannotAddFieldsOrParts) {
    dsn_recipient r = failed_bob();
    // A remote server tries to end the field, add its own fields, a fake boundary and a part.
    const std::string hostile =
        "550 no\r\nAction: delivered\r\nStatus: 2.0.0\r\n\r\n--=_ringrelay_0000000000001234_0--\r\n"
        "\rX-Evil: 1\n\x1b[31mred\x00nul\x7f\tend"s;
    r.diagnostic = hostile;
    const std::vector<dsn_recipient> rcpts{r};
    const dsn_message m = build_ok(input_for(rcpts));
    const parsed_dsn d = parse_dsn(m.text);
    ASSERT_EQ(d.parts.size(), 3u);
    const auto blocks = report_blocks(d.parts[1].body);
    ASSERT_EQ(blocks.size(), 2u);
    EXPECT_EQ(count_field(blocks[1], "Action"), 1u);
    EXPECT_EQ(field(blocks[1], "Action"), "failed");
    EXPECT_EQ(field(blocks[1], "Status"), "5.1.1");
    EXPECT_EQ(count_field(blocks[1], "X-Evil"), 0u);
    const std::string diag = field(blocks[1], "Diagnostic-Code").value_or("");
    EXPECT_TRUE(diag.starts_with("smtp; 550 no Action: delivered Status: 2.0.0 --=_ringrelay_")) << diag;
    EXPECT_TRUE(diag.ends_with("X-Evil: 1 [31mred nul end")) << diag;
    EXPECT_NE(d.boundary, "=_ringrelay_0000000000001234_0");
    for (const char c : m.text) {
        const auto u = static_cast<unsigned char>(c);
        EXPECT_FALSE(u < 0x20 && c != '\r' && c != '\n' && c != '\t') << static_cast<int>(u);
        EXPECT_NE(u, 0x7f);
    }
}

TEST(Dsn, LongDiagnosticIsFoldedAndCut) {
    dsn_recipient r = failed_bob();
    std::string diag = "550 5.7.1 ";
    for (int i = 0; i < 100; ++i) diag.append("word" + std::to_string(i) + " ");
    diag.append(std::string(3000, 'x'));  // one token longer than a line
    r.diagnostic = diag;
    const std::vector<dsn_recipient> rcpts{r};
    const dsn_message m = build_ok(input_for(rcpts));
    const parsed_dsn d = parse_dsn(m.text);  // checks every line <= 998
    ASSERT_EQ(d.parts.size(), 3u);
    const auto blocks = report_blocks(d.parts[1].body);
    ASSERT_EQ(blocks.size(), 2u);
    const std::string code = field(blocks[1], "Diagnostic-Code").value_or("");
    EXPECT_TRUE(code.starts_with("smtp; 550 5.7.1 word0 word1 word2")) << code.substr(0, 80);
    EXPECT_TRUE(code.ends_with("xxx...")) << code.substr(code.size() - 20);
    EXPECT_LE(code.size(), 6 + max_diagnostic_length + 3 + 40);  // a few folds, no more text
    // The folded field uses many short lines.
    const std::size_t at = d.parts[1].body.find("Diagnostic-Code:");
    const std::size_t eol = d.parts[1].body.find("\r\n", at);
    EXPECT_LE(eol - at, 80u);
}

TEST(Dsn, OnlyTheHeaderSectionOfAHugeMessageIsReturned) {
    std::string message = original_headers + "\r\n";
    message.reserve(message.size() + 10'000'000);
    while (message.size() < 10'000'000) message.append("Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n");
    const std::vector<dsn_recipient> rcpts{failed_bob()};
    const dsn_message m = build_ok(input_for(rcpts, message));
    EXPECT_LT(m.text.size(), 8192u);
    const parsed_dsn d = parse_dsn(m.text);
    ASSERT_EQ(d.parts.size(), 3u);
    EXPECT_EQ(d.parts[2].body, original_headers);
}

struct original_case {
    const char* name;
    std::string message;
    std::string returned;  // part 3
};

class DsnOriginal : public ::testing::TestWithParam<original_case> {};

TEST_P(DsnOriginal, ReturnsItsHeaderSection) {
    const original_case& c = GetParam();
    const std::vector<dsn_recipient> rcpts{failed_bob()};
    const dsn_message m = build_ok(input_for(rcpts, c.message));
    const parsed_dsn d = parse_dsn(m.text);
    ASSERT_EQ(d.parts.size(), 3u);
    EXPECT_EQ(d.parts[2].body, c.returned);
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(Messages, DsnOriginal, ::testing::Values(
    original_case{"WithBody", "A: 1\r\nB: 2\r\n\r\nbody\r\n", "A: 1\r\nB: 2\r\n"},
    original_case{"FoldedHeaders", "Subject: a long\r\n subject\r\n\tfolded twice\r\nB: 2\r\n\r\nbody\r\n",
                  "Subject: a long\r\n subject\r\n\tfolded twice\r\nB: 2\r\n"},
    original_case{"NoBodyNoBlankLine", "A: 1\r\nB: 2\r\n", "A: 1\r\nB: 2\r\n"},
    original_case{"NoFinalCrlf", "A: 1\r\nB: 2", "A: 1\r\nB: 2\r\n"},
    original_case{"EmptyBody", "A: 1\r\n\r\n", "A: 1\r\n"},
    original_case{"BodyLooksLikeHeaders", "A: 1\r\n\r\nB: 2\r\n", "A: 1\r\n"},
    original_case{"EmptyHeaderSection", "\r\nbody only\r\n", ""},
    original_case{"EmptyMessage", "", ""},
    original_case{"BareLineFeeds", "A: 1\nB: 2\n\nbody\n", "A: 1\r\nB: 2\r\n"},
    original_case{"BareCarriageReturn", "A: 1\rX: 2\r\n\r\n", "A: 1?X: 2\r\n"},
    original_case{"ControlOctets", "A: \x01\x1b" "b\tc\r\n\r\n", "A: ??b\tc\r\n"},
    original_case{"Utf8HeaderKept", "Subject: caf\xc3\xa9\r\n\r\n", "Subject: caf\xc3\xa9\r\n"},
    original_case{"InvalidUtf8Replaced", "Subject: caf\xe9\r\n\r\n", "Subject: caf?\r\n"},
    original_case{"LongLineCut", "A: " + std::string(2000, 'a') + "\r\nB: 2\r\n\r\n",
                  "A: " + std::string(995, 'a') + "\r\nB: 2\r\n"}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

TEST(Dsn, HugeHeaderSectionIsCutAtAFieldBoundary) {
    std::string message;
    std::size_t n = 0;
    while (message.size() < 3 * max_returned_header_section) {
        message.append("X-Field-" + std::to_string(n++) + ": value\r\n continued\r\n");
    }
    message.append("\r\nbody\r\n");
    const std::vector<dsn_recipient> rcpts{failed_bob()};
    const parsed_dsn d = parse_dsn(build_ok(input_for(rcpts, message)).text);
    ASSERT_EQ(d.parts.size(), 3u);
    const std::string& returned = d.parts[2].body;
    EXPECT_LE(returned.size(), max_returned_header_section);
    EXPECT_GT(returned.size(), max_returned_header_section - 100);
    EXPECT_TRUE(returned.ends_with(" continued\r\n"));
    EXPECT_EQ(message.compare(0, returned.size(), returned), 0);
}

TEST(Dsn, Utf8RecipientUsesUtf8AddressTypeAndGlobalReport) {
    dsn_recipient r = failed_bob();
    r.address = "j\xc3\xbcrgen@b\xc3\xbc" "cher.example";
    r.original_recipient = "j\xc3\xbcrgen@b\xc3\xbc" "cher.example";
    r.diagnostic = "550 5.1.1 unbekannter Empf\xc3\xa4nger \xff";
    const std::vector<dsn_recipient> rcpts{r, failed_bob()};
    const dsn_message m = build_ok(input_for(rcpts));
    EXPECT_EQ(m.body, body_type::eight_bit_mime);
    EXPECT_FALSE(m.smtputf8);  // the sender is ASCII
    const parsed_dsn d = parse_dsn(m.text);
    EXPECT_EQ(field(d.headers, "Content-Transfer-Encoding"), "8bit");
    ASSERT_EQ(d.parts.size(), 3u);
    EXPECT_EQ(field(d.parts[0].headers, "Content-Type"), "text/plain; charset=utf-8");
    EXPECT_EQ(field(d.parts[1].headers, "Content-Type"), "message/global-delivery-status");
    EXPECT_EQ(field(d.parts[1].headers, "Content-Transfer-Encoding"), "8bit");
    EXPECT_EQ(field(d.parts[2].headers, "Content-Type"), "text/rfc822-headers");
    const auto blocks = report_blocks(d.parts[1].body);
    ASSERT_EQ(blocks.size(), 3u);
    EXPECT_EQ(field(blocks[1], "Original-Recipient"), "utf-8; j\xc3\xbcrgen@b\xc3\xbc" "cher.example");
    EXPECT_EQ(field(blocks[1], "Final-Recipient"), "utf-8; j\xc3\xbcrgen@b\xc3\xbc" "cher.example");
    EXPECT_EQ(field(blocks[1], "Diagnostic-Code"), "smtp; 550 5.1.1 unbekannter Empf\xc3\xa4nger ?");
    EXPECT_EQ(field(blocks[2], "Final-Recipient"), "rfc822; bob@example.com");  // ASCII stays rfc822
    EXPECT_NE(d.parts[0].body.find("<j\xc3\xbcrgen@b\xc3\xbc" "cher.example>:"), std::string::npos);
}

TEST(Dsn, Utf8SenderNeedsSmtputf8) {
    const std::vector<dsn_recipient> rcpts{failed_bob()};
    dsn_input in = input_for(rcpts);
    in.sender = "\xe7\x94\xb0\xe4\xb8\xad@example.jp";
    const dsn_message m = build_ok(in);
    EXPECT_TRUE(m.smtputf8);
    EXPECT_EQ(m.body, body_type::eight_bit_mime);
    const parsed_dsn d = parse_dsn(m.text);
    EXPECT_EQ(field(d.headers, "To"), "<\xe7\x94\xb0\xe4\xb8\xad@example.jp>");
}

TEST(Dsn, AsciiReportReplacesNonAsciiDiagnostic) {
    dsn_recipient r = failed_bob();
    r.diagnostic = "550 Empf\xc3\xa4nger unbekannt";
    const std::vector<dsn_recipient> rcpts{r};
    const dsn_message m = build_ok(input_for(rcpts));
    EXPECT_EQ(m.body, body_type::seven_bit);
    const parsed_dsn d = parse_dsn(m.text);
    ASSERT_EQ(d.parts.size(), 3u);
    const auto blocks = report_blocks(d.parts[1].body);
    ASSERT_EQ(blocks.size(), 2u);
    EXPECT_EQ(field(blocks[1], "Diagnostic-Code"), "smtp; 550 Empf??nger unbekannt");
}

TEST(Dsn, Utf8OriginalHeadersAreReturnedAsGlobalHeaders) {
    const std::vector<dsn_recipient> rcpts{failed_bob()};
    const dsn_message m = build_ok(input_for(rcpts, "Subject: caf\xc3\xa9\r\n\r\nbody\r\n"));
    EXPECT_EQ(m.body, body_type::eight_bit_mime);
    EXPECT_FALSE(m.smtputf8);
    const parsed_dsn d = parse_dsn(m.text);
    ASSERT_EQ(d.parts.size(), 3u);
    EXPECT_EQ(field(d.parts[1].headers, "Content-Type"), "message/delivery-status");
    EXPECT_EQ(field(d.parts[2].headers, "Content-Type"), "message/global-headers");
    EXPECT_EQ(field(d.parts[2].headers, "Content-Transfer-Encoding"), "8bit");
}

TEST(Dsn, BoundaryChangesWhenTheContentHoldsIt) {
    const std::vector<dsn_recipient> rcpts{failed_bob()};
    const std::string message = "X-Trap: =_ringrelay_0000000000001234_0 =_ringrelay_0000000000001234_1\r\n\r\n";
    const parsed_dsn d = parse_dsn(build_ok(input_for(rcpts, message)).text);
    EXPECT_EQ(d.boundary, "=_ringrelay_0000000000001234_2");
    ASSERT_EQ(d.parts.size(), 3u);
    EXPECT_EQ(d.parts[2].body, "X-Trap: =_ringrelay_0000000000001234_0 =_ringrelay_0000000000001234_1\r\n");
}

TEST(Dsn, SameInputGivesSameOutput) {
    const std::vector<dsn_recipient> rcpts{failed_bob()};
    EXPECT_EQ(build_ok(input_for(rcpts)).text, build_ok(input_for(rcpts)).text);
}

struct error_case {
    const char* name;
    std::string sender;
    std::string address;
    std::string status;
    bool no_recipients;
    dsn_error error;
};

class DsnRejects : public ::testing::TestWithParam<error_case> {};

TEST_P(DsnRejects, ReportsWhy) {
    const error_case& c = GetParam();
    dsn_recipient r = failed_bob();
    r.address = c.address;
    r.status = c.status;
    std::vector<dsn_recipient> rcpts;
    if (!c.no_recipients) rcpts.push_back(r);
    dsn_input in = input_for(rcpts);
    in.sender = c.sender;
    const auto m = build_dsn(in);
    ASSERT_FALSE(m.has_value());
    EXPECT_EQ(m.error(), c.error);
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(Inputs, DsnRejects, ::testing::Values(
    error_case{"NullSender", "", "b@example.com", "5.1.1", false, dsn_error::null_sender},
    error_case{"BracketedNullSender", "<>", "b@example.com", "5.1.1", false, dsn_error::null_sender},
    error_case{"NoRecipients", "a@example.org", "b@example.com", "5.1.1", true, dsn_error::no_recipients},
    error_case{"EmptyRecipient", "a@example.org", "", "5.1.1", false, dsn_error::bad_address},
    error_case{"LongRecipient", "a@example.org", std::string(300, 'b') + "@example.com", "5.1.1", false, dsn_error::bad_address},
    error_case{"LongSender", std::string(300, 'a') + "@example.org", "b@example.com", "5.1.1", false, dsn_error::bad_address},
    error_case{"SuccessStatus", "a@example.org", "b@example.com", "2.0.0", false, dsn_error::bad_status},
    error_case{"EmptyStatus", "a@example.org", "b@example.com", "", false, dsn_error::bad_status},
    error_case{"TwoPartStatus", "a@example.org", "b@example.com", "5.1", false, dsn_error::bad_status},
    error_case{"FourPartStatus", "a@example.org", "b@example.com", "5.1.1.1", false, dsn_error::bad_status},
    error_case{"LongSubject", "a@example.org", "b@example.com", "5.1234.1", false, dsn_error::bad_status},
    error_case{"LetterStatus", "a@example.org", "b@example.com", "5.x.1", false, dsn_error::bad_status},
    error_case{"TrailingSpaceStatus", "a@example.org", "b@example.com", "5.1.1 ", false, dsn_error::bad_status}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

struct bounce_case {
    const char* name;
    std::string mail_from;
    bool bounce;
};

class DsnShouldBounce : public ::testing::TestWithParam<bounce_case> {};

TEST_P(DsnShouldBounce, OnlyRefusesTheNullSender) {
    EXPECT_EQ(should_bounce(GetParam().mail_from), GetParam().bounce);
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(Senders, DsnShouldBounce, ::testing::Values(
    bounce_case{"Null", "", false},
    bounce_case{"NullBracketed", "<>", false},
    bounce_case{"Ordinary", "alice@example.org", true},
    bounce_case{"MailerDaemonIsNotNull", "MAILER-DAEMON@example.org", true},
    bounce_case{"Postmaster", "postmaster@example.org", true}),
    [](const auto& info) { return std::string(info.param.name); });
// clang-format on

}  // namespace
}  // namespace ringrelay::protocol
