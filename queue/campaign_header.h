// queue/campaign_header.h: a message's campaign (issue 17): the value of the header field the
// shaping rules name (queue/shaping_rules.h campaign_header, e.g. "X-Campaign-Id"), read when
// the message is committed (queue/connection.h), and the message without every field of that
// name: what is signed (DKIM), stored and delivered, so that the receiver never sees it and
// signatures made here cover what it gets. RFC 5322 §2.2 (header fields), §2.2.3 (folding and
// unfolding), §3.6.8 (optional fields).
//
// The campaign is the first such field's value, unfolded (each line end before a continuation
// removed), each run of spaces and tabs made one space, trimmed; it counts only if it is 1 to
// max_campaign_name octets of printable US-ASCII (0x20-0x7E). A field with no usable value is
// still stripped; a later field of the name does not replace the first's value. Names compare
// without ASCII case; the header section ends at the first empty line (the body is never looked
// at, so the DKIM body hash taken as the message arrived stays right).
//
// Pure: no I/O; allocates the result only.
// SECURITY: `message` comes from the network: views never pass message.size(); the value is
// bounded (max_campaign_name) before it is kept.
#pragma once
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ringrelay::queue {

// One header field in a message: its first octet and its length, its last line end included.
struct field_span {
    std::size_t offset = 0;
    std::size_t size = 0;
    friend bool operator==(const field_span&, const field_span&) = default;
};

struct campaign_fields {
    std::string campaign;            // as the message gave it (see above), "" if none was usable
    std::vector<field_span> fields;  // every field named so, in order; empty if none
};

// The fields named `name` (an RFC 5322 field name, any case) in the header section of `message`
// (the message as stored: CRLF line ends; a lone LF or CR is taken as a line end too).
[[nodiscard]] campaign_fields find_campaign_fields(std::string_view message, std::string_view name);

// Appends `message` without `fields` (find_campaign_fields()'s: in order, not overlapping) to out.
void append_without_fields(std::string& out, std::string_view message, std::span<const field_span> fields);

}  // namespace ringrelay::queue
