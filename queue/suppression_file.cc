// queue/suppression_file.cc: see suppression_file.h. The format's pure half (names, parsing,
// expiry); reading and writing the directory is in suppression_directory.cc, so that the fuzz
// target (tests/fuzz/fuzz_suppression_journal.cc) links this file alone.
#include "queue/suppression_file.h"

#include <algorithm>
#include <cstdio>

namespace ringrelay::queue {

namespace {

constexpr std::size_t segment_copy = record_header_size + segment_payload_size;

}  // namespace

std::string_view suppression_source_name(suppression_source source) noexcept {
    switch (source) {
    case suppression_source::hard_bounce: return "hard-bounce";
    case suppression_source::operator_added: return "operator";
    case suppression_source::api: return "api";
    case suppression_source::unsubscribe: return "unsubscribe";
    }
    return "hard-bounce";
}

void suppression_normalise(std::string& text) noexcept {
    for (char& ch : text)
        if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch + ('a' - 'A'));
}

std::string suppression_directory(const std::string& spool) { return spool + "/suppression"; }

std::string suppression_list_name(std::uint64_t generation) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%010llu.list", static_cast<unsigned long long>(generation));
    return buf;
}

std::string suppression_journal_name(std::uint64_t generation, unsigned shard) {
    char buf[48];
    std::snprintf(buf, sizeof buf, "%010llu.shard-%u", static_cast<unsigned long long>(generation), shard);
    return buf;
}

journal_contents parse_suppression_journal(std::string_view all, std::string_view name) {
    journal_contents out;
    const std::string who(name);
    if (all.empty()) return out;
    // The salt from the first valid segment record copy, as spool recovery does
    // (queue/spool.cc): without one nothing in the file can be trusted.
    auto first = decode_record(all, 0);
    auto second = decode_record(all.substr(std::min(segment_copy, all.size())), 0);
    const bool first_ok = first && first->header.type == record_type::segment;
    const bool second_ok = second && second->header.type == record_type::segment;
    if (!first_ok && !second_ok) {
        out.problems.push_back(who + ": no valid segment record at offset 0 or " + std::to_string(segment_copy) +
                               "; file skipped");
        return out;
    }
    if (first_ok && second_ok && first->salt != second->salt) {
        out.problems.push_back(who + ": the two segment records disagree; file skipped");
        return out;
    }
    if (!first_ok || !second_ok)
        out.problems.push_back(who + ": segment record copy at offset " +
                               std::to_string(first_ok ? segment_copy : 0) + " damaged; using the other");
    const std::uint32_t salt = first_ok ? first->salt : second->salt;
    std::size_t pos = 2 * segment_copy;
    while (pos < all.size()) {
        auto rec = decode_record(all.substr(pos), salt);
        if (rec && rec->header.type == record_type::suppression) {
            suppression_entry e;
            e.tenant = std::move(rec->tenant);
            e.address = std::move(rec->address);
            suppression_normalise(e.tenant);  // written normalised; a hand-made file need not be
            suppression_normalise(e.address);
            e.time_us = rec->header.received_us;
            e.queue_id = rec->header.queue_id;
            e.source = rec->source;
            e.reason = std::move(rec->reason);
            e.change = rec->change;
            out.entries.push_back(std::move(e));
            pos += rec->record_size;
            continue;
        }
        if (rec) {
            out.problems.push_back(who + " offset " + std::to_string(pos) + ": not a suppression record; skipped");
            pos += rec->record_size;
            continue;
        }
        out.problems.push_back(who + " offset " + std::to_string(pos) + ": " + std::string(describe(rec.error())) +
                               "; skipped");
        const char magic[4] = {'R', 'R', 'S', '1'};
        const auto next = all.find(std::string_view(magic, 4), pos + 1);
        if (next == std::string_view::npos) break;
        pos = next;
    }
    return out;
}

void drop_expired(std::vector<suppression_entry>& entries, std::uint64_t now_us, std::uint32_t ttl_s) {
    if (ttl_s == 0) return;
    const std::uint64_t ttl_us = static_cast<std::uint64_t>(ttl_s) * 1000000;
    std::erase_if(entries, [&](const suppression_entry& e) { return e.time_us + ttl_us <= now_us; });
}

}  // namespace ringrelay::queue
