// queue/inject_body.h: the body of POST /api/v1/inject (issue 18; queue/injector.h takes it from
// there): parsed and checked with simdjson, and the message it carries made ready to store:
// an RFC 5322 message given whole ("content": "...") has its line ends made CRLF and gets
// Date: and Message-ID: when it lacks them; a message described by parts ("content": {...}) is
// built as MIME (RFC 2045-2047, 2183, 2231): text/plain or text/html alone, multipart/alternative
// for both, multipart/mixed around them with attachments (base64); text is 7bit when it is
// ASCII with short lines, quoted-printable otherwise; header values with non-ASCII text are
// RFC 2047 encoded words. Every line ends in CRLF and is at most 998 octets (RFC 5322 §2.1.1).
//
// Body:
//   {"envelope_sender": "a@example.org",        // "" for the null sender
//    "recipients": [{"email": "b@example.net"}, ...],
//    "content": "<RFC 5322 message>" | {"from": "...", "subject": "...", "text_body": "...",
//               "html_body": "...", "attachments": [{"file_name": "...", "content_type":
//               "...", "data": "<base64>"}], "headers": {"Name": "value", ...}}}
// Unknown fields are refused; every error names the field ("recipients[2].email: ...").
//
// Pure: no I/O, no clock (the date and the Message-ID are given). Any thread. inject_gateway is
// the seam to the shard, as admin_gateway is for the queue API.
// SECURITY: the body comes from the network (an --http-networks client for now). simdjson
// bounds the parse; every text put in a header is checked for CR, LF and NUL.
#pragma once
#include <sys/socket.h>

#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/http_server.h"

namespace ringrelay::queue {

// RFC 5322 §2.1.1.
inline constexpr std::size_t max_line_octets = 998;

struct inject_attachment {
    std::string file_name;
    std::string content_type;  // "application/pdf"; "application/octet-stream" when not given
    std::string data;          // decoded
};

// "content" given as parts: the message is built from them (build_mime_message()).
struct inject_parts {
    std::string from;      // required: "Name <a@example.org>" or "a@example.org"
    std::string subject;
    std::string text_body;
    std::string html_body;
    std::vector<inject_attachment> attachments;
    std::vector<std::pair<std::string, std::string>> headers;  // in the order given
};

struct inject_request {
    std::string envelope_sender;  // "" for the null sender
    std::vector<std::string> recipients;
    bool smtputf8 = false;  // an address has non-ASCII octets (RFC 6531)
    std::string raw;        // "content" as a string, as given (prepare_raw_message() next)
    std::optional<inject_parts> parts;
    // Not from the body: the user whose HTTP Basic credentials the API checked (--http-tls), or
    // empty. Like SMTP AUTH, it may relay anywhere and is the message's tenant (auth_user).
    std::string auth_user;
};

// The request, or why not as the text of a 400's {"error": ...}.
[[nodiscard]] std::expected<inject_request, std::string> parse_inject_body(std::string_view body);

// What a message gets when it has no field of its own: Date: and Message-ID: values.
struct message_stamp {
    std::string_view date;        // RFC 5322 date-time
    std::string_view message_id;  // "<id@host>"
    std::string_view boundary;    // MIME boundaries are this plus "_1", "_2"...; "=_" in it
};

// The MIME message for `parts`: Date, From, Subject, Message-ID, MIME-Version, the given
// headers, then the body. Date: and Message-ID: given in `parts.headers` replace the stamp's.
[[nodiscard]] std::string build_mime_message(const inject_parts& parts, const message_stamp& stamp);

// A message given whole: line ends made CRLF (a lone LF or CR becomes CRLF), a last line
// without one gets one, Date: and Message-ID: added at the top of the header section when it has
// none. The message, or why not (a line over 998 octets, a NUL, no header section).
[[nodiscard]] std::expected<std::string, std::string> prepare_raw_message(std::string_view content,
                                                                         const message_stamp& stamp);

// How http_api hands a request whose body parsed to its shard's injector (queue/injector.h):
// the injector answers `answer` now (refusals) or defers it until the commit. `peer` is valid
// during the call.
class inject_gateway {
public:
    virtual void inject(inject_request&& request, const sockaddr* peer, core::http_answer& answer) noexcept = 0;

protected:
    ~inject_gateway() = default;
};

}  // namespace ringrelay::queue
