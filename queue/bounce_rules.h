// queue/bounce_rules.h: the bounce classification rules as data (issue 16): etc/bounce-classes.json,
// compiled into the binary at build time (scripts/embed-text, queue/meson.build), and the
// operator's --bounce-classes FILE over it, parsed with simdjson into a protocol::bounce_rules
// table (protocol/bounce_class.h has the matching; docs/bounce-classes.md the file format).
//
// Override semantics: a rule of the file whose "name" is that of an embedded rule replaces it
// where it stands in the order; every other rule of the file goes before all embedded rules, in
// the file's order (the operator's rules are tried first). There is no way to delete a rule.
//
// A document that does not load is an error naming the document, the rule (position and name)
// and the reason; the daemon does not start with it (tools/ringrelay.cc, exit status 2).
// SECURITY: operator input (a file named on the command line, and our own embedded file), never
// network input. Bounded: at most protocol::max_rules rules, protocol::max_rule_patterns per list,
// protocol::max_pattern_length octets per text pattern; every key is checked, unknown keys are
// errors.
//
// Threading: load_bounce_rules() reads a file (blocking); it runs once, at start-up, on the main
// thread (tools/ringrelay.cc), which hands the table to the relay (queue/relay.h); every shard
// then reads that one immutable table.
#pragma once
#include <expected>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/bounce_class.h"

namespace ringrelay::queue {

// The name errors give the embedded document.
inline constexpr std::string_view embedded_bounce_classes_label = "etc/bounce-classes.json (embedded)";

// etc/bounce-classes.json as it was at build time.
[[nodiscard]] std::string_view embedded_bounce_classes() noexcept;

// One rules document. Errors start with `label`: "LABEL: rule 3 \"name\": unknown class 'x'".
[[nodiscard]] std::expected<std::vector<protocol::bounce_rule>, std::string>
parse_bounce_rules(std::string_view json, std::string_view label);

// `overrides` merged over `base` (see the file comment). Names are unique in each.
[[nodiscard]] std::vector<protocol::bounce_rule> merge_bounce_rules(std::vector<protocol::bounce_rule> base,
                                                                   std::vector<protocol::bounce_rule> overrides);

// What a load did, for the start-up line.
struct bounce_rules_load {
    protocol::bounce_rules table;
    std::size_t embedded = 0;  // rules of the embedded file
    std::size_t added = 0;     // rules of the override file with new names
    std::size_t replaced = 0;  // rules of the override file that replaced embedded ones
};

// The table a relay classifies with: the embedded rules, with `override_file` (--bounce-classes;
// empty: none) merged over them. Errors start with "--bounce-classes FILE: ".
[[nodiscard]] std::expected<bounce_rules_load, std::string> load_bounce_rules(const std::string& override_file);

// "bounce classes: 120 rules (etc/bounce-classes.json, embedded)" plus ", FILE: 2 added, 1 replaced".
[[nodiscard]] std::string describe(const bounce_rules_load& load, const std::string& override_file);

}  // namespace ringrelay::queue
