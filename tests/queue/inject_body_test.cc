// tests/queue/inject_body_test.cc: POST /api/v1/inject's body (issue 18): bad bodies refused
// naming the field (exact texts), good ones read; the MIME message built from parts and the
// message given whole, octet for octet.
#include "queue/inject_body.h"

#include <gtest/gtest.h>

#include <string>

using namespace ringrelay::queue;

namespace {

const message_stamp stamp{.date = "Tue, 08 Dec 2026 01:30:00 +0000",
                          .message_id = "<0000000000000100@relay.example>",
                          .boundary = "=_rr_0000000000000100"};

struct bad_body {
    const char* label;
    const char* body;
    const char* error;
};

class InjectBodyBad : public ::testing::TestWithParam<bad_body> {};

TEST_P(InjectBodyBad, IsRefusedNamingTheField) {
    const bad_body& c = GetParam();
    const auto r = parse_inject_body(c.body);
    ASSERT_FALSE(r.has_value()) << c.label;
    EXPECT_EQ(r.error(), c.error) << c.label;
}

#define RCPT R"("recipients": [{"email": "b@example.net"}])"
#define SENDER R"("envelope_sender": "a@example.org")"

INSTANTIATE_TEST_SUITE_P(
    Table, InjectBodyBad,
    ::testing::Values(
        bad_body{"not_json", "{", "body: not valid JSON: The JSON document has an improper structure: missing or superfluous commas, braces, missing keys, etc."},
        bad_body{"not_object", "[]", "body: expected a JSON object"},
        bad_body{"unknown_field", "{" SENDER ", " RCPT R"(, "content": "A: b", "x": 1})", "unknown field \"x\""},
        bad_body{"no_sender", "{" RCPT R"(, "content": "A: b"})", "\"envelope_sender\" is required"},
        bad_body{"no_recipients", "{" SENDER R"(, "content": "A: b"})", "\"recipients\" is required"},
        bad_body{"no_content", "{" SENDER ", " RCPT "}", "\"content\" is required"},
        bad_body{"sender_number", R"({"envelope_sender": 1})", "\"envelope_sender\": expected a string"},
        bad_body{"sender_bad", R"({"envelope_sender": "a b@c"})", "\"envelope_sender\": not an address: \"a b@c\""},
        bad_body{"sender_twice", R"({"envelope_sender": "", "envelope_sender": ""})", "\"envelope_sender\": given twice"},
        bad_body{"recipients_object", "{" SENDER R"(, "recipients": {}})", "\"recipients\": expected an array"},
        bad_body{"recipients_empty", "{" SENDER R"(, "recipients": []})", "\"recipients\": empty"},
        bad_body{"recipient_string", "{" SENDER R"(, "recipients": ["b@example.net"]})", "\"recipients[0]\": expected an object"},
        bad_body{"recipient_unknown", "{" SENDER R"(, "recipients": [{"email": "b@x.org"}, {"name": "B"}]})",
                 "\"recipients[1]\": unknown field \"name\""},
        bad_body{"recipient_no_email", "{" SENDER R"(, "recipients": [{}]})", "\"recipients[0].email\" is required"},
        bad_body{"recipient_bad", "{" SENDER R"(, "recipients": [{"email": "<b@x.org>"}]})",
                 "\"recipients[0].email\": not an address: \"<b@x.org>\""},
        bad_body{"recipient_null", "{" SENDER R"(, "recipients": [{"email": ""}]})",
                 "\"recipients[0].email\": not an address: \"\""},
        bad_body{"content_number", "{" SENDER ", " RCPT R"(, "content": 5})", "\"content\": expected a string or an object"},
        bad_body{"content_empty", "{" SENDER ", " RCPT R"(, "content": ""})", "\"content\": empty"},
        bad_body{"parts_unknown", "{" SENDER ", " RCPT R"(, "content": {"from": "a@example.org", "text": "x"}})",
                 "\"content\": unknown field \"text\""},
        bad_body{"parts_no_from", "{" SENDER ", " RCPT R"(, "content": {"text_body": "x"}})", "\"content.from\" is required"},
        bad_body{"parts_bad_from", "{" SENDER ", " RCPT R"(, "content": {"from": "A <a>", "text_body": "x"}})",
                 "\"content.from\": not an address: \"A <a>\""},
        bad_body{"parts_from_crlf", "{" SENDER ", " RCPT R"(, "content": {"from": "a@example.org\r\nBcc: x", "text_body": "x"}})",
                 "\"content.from\": CR, LF or NUL in it"},
        bad_body{"parts_no_body", "{" SENDER ", " RCPT R"(, "content": {"from": "a@example.org", "subject": "s"}})",
                 "\"content\": one of \"text_body\", \"html_body\", \"attachments\" is required"},
        bad_body{"parts_subject_number", "{" SENDER ", " RCPT R"(, "content": {"from": "a@example.org", "subject": 1}})",
                 "\"content.subject\": expected a string"},
        bad_body{"attachments_object", "{" SENDER ", " RCPT R"(, "content": {"from": "a@example.org", "attachments": {}}})",
                 "\"content.attachments\": expected an array"},
        bad_body{"attachment_no_data", "{" SENDER ", " RCPT R"(, "content": {"from": "a@example.org", "attachments": [{"file_name": "a"}]}})",
                 "\"content.attachments[0].data\" is required"},
        bad_body{"attachment_bad_base64", "{" SENDER ", " RCPT R"(, "content": {"from": "a@example.org", "attachments": [{"data": "abc"}]}})",
                 "\"content.attachments[0].data\": not base64 (RFC 4648 §4, padded, no line breaks)"},
        bad_body{"attachment_bad_type", "{" SENDER ", " RCPT R"(, "content": {"from": "a@example.org", "attachments": [{"data": "", "content_type": "pdf"}]}})",
                 "\"content.attachments[0].content_type\": not a MIME type (type/subtype): \"pdf\""},
        bad_body{"attachment_unknown", "{" SENDER ", " RCPT R"(, "content": {"from": "a@example.org", "attachments": [{"data": "", "size": 1}]}})",
                 "\"content.attachments[0]\": unknown field \"size\""},
        bad_body{"headers_array", "{" SENDER ", " RCPT R"(, "content": {"from": "a@example.org", "text_body": "x", "headers": []}})",
                 "\"content.headers\": expected an object"},
        bad_body{"header_bad_name", "{" SENDER ", " RCPT R"(, "content": {"from": "a@example.org", "text_body": "x", "headers": {"X Y": "1"}}})",
                 "\"content.headers\": not a header field name: \"X Y\""},
        bad_body{"header_content_type", "{" SENDER ", " RCPT R"(, "content": {"from": "a@example.org", "text_body": "x", "headers": {"content-type": "text/plain"}}})",
                 "\"content.headers.content-type\": made by the relay"},
        bad_body{"header_from", "{" SENDER ", " RCPT R"(, "content": {"from": "a@example.org", "text_body": "x", "headers": {"From": "b@x.org"}}})",
                 "\"content.headers.From\": give it as \"content.from\""},
        bad_body{"header_lf", "{" SENDER ", " RCPT R"(, "content": {"from": "a@example.org", "text_body": "x", "headers": {"X-A": "1\nBcc: c@d"}}})",
                 "\"content.headers.X-A\": CR, LF or NUL in it"},
        bad_body{"header_number", "{" SENDER ", " RCPT R"(, "content": {"from": "a@example.org", "text_body": "x", "headers": {"X-A": 1}}})",
                 "\"content.headers.X-A\": expected a string"}),
    [](const auto& info) { return std::string(info.param.label); });

TEST(InjectBody, ReadsARawMessage) {
    const auto r = parse_inject_body(
        R"({"envelope_sender": "", "recipients": [{"email": "b@example.net"}, {"email": "c@example.net"}], "content": "Subject: x\n\nhi\n"})");
    ASSERT_TRUE(r.has_value()) << r.error();
    EXPECT_EQ(r->envelope_sender, "");
    EXPECT_EQ(r->recipients, (std::vector<std::string>{"b@example.net", "c@example.net"}));
    EXPECT_EQ(r->raw, "Subject: x\n\nhi\n");
    EXPECT_FALSE(r->parts.has_value());
    EXPECT_FALSE(r->smtputf8);
}

TEST(InjectBody, MarksNonAsciiAddressesAsSmtputf8) {
    const auto r = parse_inject_body(
        R"({"envelope_sender": "a@example.org", "recipients": [{"email": "josé@example.net"}], "content": "A: b"})");
    ASSERT_TRUE(r.has_value()) << r.error();
    EXPECT_TRUE(r->smtputf8);
}

TEST(InjectBody, ReadsParts) {
    const auto r = parse_inject_body(R"({"envelope_sender": "a@example.org", "recipients": [{"email": "b@example.net"}],
        "content": {"from": "A <a@example.org>", "subject": "S", "text_body": "t", "html_body": "<p>h</p>",
                    "attachments": [{"file_name": "f.bin", "content_type": "Application/Octet-Stream", "data": "AAEC"}],
                    "headers": {"To": "b@example.net", "X-Tag": "1"}}})");
    ASSERT_TRUE(r.has_value()) << r.error();
    ASSERT_TRUE(r->parts.has_value());
    EXPECT_EQ(r->parts->from, "A <a@example.org>");
    EXPECT_EQ(r->parts->subject, "S");
    ASSERT_EQ(r->parts->attachments.size(), 1u);
    EXPECT_EQ(r->parts->attachments[0].data, std::string("\0\1\2", 3));
    EXPECT_EQ(r->parts->attachments[0].content_type, "application/octet-stream");
    ASSERT_EQ(r->parts->headers.size(), 2u);
    EXPECT_EQ(r->parts->headers[1].first, "X-Tag");
}

TEST(InjectMime, BuildsOneTextPart) {
    inject_parts p;
    p.from = "a@example.org";
    p.subject = "Hello";
    p.text_body = "line one\nline two";
    p.headers = {{"To", "b@example.net"}};
    EXPECT_EQ(build_mime_message(p, stamp),
              "Date: Tue, 08 Dec 2026 01:30:00 +0000\r\n"
              "From: a@example.org\r\n"
              "Subject: Hello\r\n"
              "Message-ID: <0000000000000100@relay.example>\r\n"
              "MIME-Version: 1.0\r\n"
              "To: b@example.net\r\n"
              "Content-Type: text/plain; charset=utf-8\r\n"
              "Content-Transfer-Encoding: 7bit\r\n"
              "\r\n"
              "line one\r\n"
              "line two\r\n");
}

TEST(InjectMime, KeepsTheCallersDateAndMessageId) {
    inject_parts p;
    p.from = "a@example.org";
    p.html_body = "<p>x</p>";
    p.headers = {{"Message-ID", "<mine@x>"}, {"date", "Mon, 07 Dec 2026 00:00:00 +0000"}};
    EXPECT_EQ(build_mime_message(p, stamp),
              "From: a@example.org\r\n"
              "MIME-Version: 1.0\r\n"
              "Message-ID: <mine@x>\r\n"
              "date: Mon, 07 Dec 2026 00:00:00 +0000\r\n"
              "Content-Type: text/html; charset=utf-8\r\n"
              "Content-Transfer-Encoding: 7bit\r\n"
              "\r\n"
              "<p>x</p>\r\n");
}

TEST(InjectMime, BuildsAlternativeInsideMixedWithAnAttachment) {
    inject_parts p;
    p.from = "Zoë <a@example.org>";
    p.subject = "Grüße";
    p.text_body = "café = 1";
    p.html_body = "<p>x</p>";
    p.attachments = {{"r\"1.bin", "application/octet-stream", std::string("\0\1\2\3", 4)}};
    EXPECT_EQ(build_mime_message(p, stamp),
              "Date: Tue, 08 Dec 2026 01:30:00 +0000\r\n"
              "From: =?UTF-8?B?Wm/Dqw==?=\r\n <a@example.org>\r\n"
              "Subject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n"
              "Message-ID: <0000000000000100@relay.example>\r\n"
              "MIME-Version: 1.0\r\n"
              "Content-Type: multipart/mixed; boundary=\"=_rr_0000000000000100_1\"\r\n"
              "\r\n"
              "--=_rr_0000000000000100_1\r\n"
              "Content-Type: multipart/alternative; boundary=\"=_rr_0000000000000100_2\"\r\n"
              "\r\n"
              "--=_rr_0000000000000100_2\r\n"
              "Content-Type: text/plain; charset=utf-8\r\n"
              "Content-Transfer-Encoding: quoted-printable\r\n"
              "\r\n"
              "caf=C3=A9 =3D 1\r\n"
              "\r\n--=_rr_0000000000000100_2\r\n"
              "Content-Type: text/html; charset=utf-8\r\n"
              "Content-Transfer-Encoding: 7bit\r\n"
              "\r\n"
              "<p>x</p>\r\n"
              "\r\n--=_rr_0000000000000100_2--\r\n"
              "\r\n--=_rr_0000000000000100_1\r\n"
              "Content-Type: application/octet-stream\r\n"
              "Content-Disposition: attachment;\r\n filename=\"r\\\"1.bin\"\r\n"
              "Content-Transfer-Encoding: base64\r\n"
              "\r\n"
              "AAECAw==\r\n"
              "\r\n--=_rr_0000000000000100_1--\r\n");
}

TEST(InjectMime, QuotedPrintableKeepsLinesShortAndTrailingSpaceEncoded) {
    inject_parts p;
    p.from = "a@example.org";
    p.text_body = std::string(80, 'x') + " \n\xC3\xA9";
    const std::string m = build_mime_message(p, stamp);
    const std::string body = m.substr(m.find("\r\n\r\n") + 4);
    EXPECT_EQ(body, std::string(75, 'x') + "=\r\n" + std::string(5, 'x') + "=20\r\n=C3=A9\r\n");
}

TEST(InjectMime, EncodesANonAsciiFileNameAsRfc2231AndLongDataInLinesOf76) {
    inject_parts p;
    p.from = "a@example.org";
    p.attachments = {{"é.txt", "text/plain", std::string(60, 'a')}};
    const std::string m = build_mime_message(p, stamp);
    EXPECT_NE(m.find("Content-Disposition: attachment;\r\n filename*=UTF-8''%C3%A9.txt\r\n"), std::string::npos) << m;
    // 60 octets: 80 base64 characters, in a line of 76 and one of 4.
    EXPECT_NE(m.find("YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFh\r\nYWFh\r\n\r\n--"),
              std::string::npos)
        << m;
}

TEST(InjectMime, EveryLineEndsInCrlfAndFitsIn998) {
    inject_parts p;
    p.from = "a@example.org";
    p.subject = std::string(1200, 's');
    p.text_body = std::string(3000, 't') + "\r" + std::string(10, 'u');
    p.headers = {{"X-Long", std::string(1000, 'v')}};
    const std::string m = build_mime_message(p, stamp);
    std::size_t start = 0;
    while (start < m.size()) {
        const std::size_t end = m.find("\r\n", start);
        ASSERT_NE(end, std::string::npos);
        EXPECT_LE(end - start, max_line_octets);
        EXPECT_EQ(m.substr(start, end - start).find_first_of("\r\n"), std::string::npos);
        start = end + 2;
    }
}

TEST(InjectRaw, MakesLineEndsCrlfAndAddsDateAndMessageId) {
    const auto m = prepare_raw_message("Subject: x\nFrom: a@example.org\r\n\nhi\rthere", stamp);
    ASSERT_TRUE(m.has_value()) << m.error();
    EXPECT_EQ(*m,
              "Date: Tue, 08 Dec 2026 01:30:00 +0000\r\n"
              "Message-ID: <0000000000000100@relay.example>\r\n"
              "Subject: x\r\nFrom: a@example.org\r\n\r\nhi\r\nthere\r\n");
}

TEST(InjectRaw, KeepsItsOwnDateAndMessageId) {
    const std::string given = "message-id: <x@y>\r\nDATE: Mon, 07 Dec 2026 00:00:00 +0000\r\n\r\nDate: body\r\n";
    const auto m = prepare_raw_message(given, stamp);
    ASSERT_TRUE(m.has_value()) << m.error();
    EXPECT_EQ(*m, given);
}

TEST(InjectRaw, RefusesWhatCannotBeSent) {
    EXPECT_EQ(prepare_raw_message("A: b\r\n\r\n" + std::string(999, 'x'), stamp).error(),
              "\"content\": line 3 is longer than 998 octets");
    EXPECT_TRUE(prepare_raw_message("A: b\r\n\r\n" + std::string(998, 'x'), stamp).has_value());
    EXPECT_EQ(prepare_raw_message(std::string("A: b\r\n\0", 7), stamp).error(), "\"content\": a NUL in it");
    EXPECT_EQ(prepare_raw_message("hello\r\n", stamp).error(),
              "\"content\": does not start with a header field (RFC 5322 §2.2)");
}

}  // namespace
