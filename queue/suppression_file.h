// queue/suppression_file.h: the suppression list on disk (issue 16): the journal files in
// SPOOL/suppression/, how they are read back, and their compaction.
//
// Layout, by generation N (10 digits):
//   N.list      the whole list as it was when generation N began (written by the relay at
//               start-up and by the offline --suppress/--unsuppress, never appended to)
//   N.shard-K   what shard K added since (appended with group commit: queue/suppression.h)
// Every file is shaped like a spool segment (queue/record.h): two segment records carrying
// the file's salt, then suppression records (type 4), one per entry added or removed. An entry
// is (tenant, address, time added, source, queue id of the bounced message, reason); the same
// pair appearing again (a later bounce) moves its time. A removal record (DELETE
// /api/v1/suppressions) takes the pair off the list if it is at least as late as every addition
// of the pair (across all files of the generation: journals are merged by time, not by file);
// an addition after it puts the pair back. Removals live only in the journals: compaction
// (every start) writes the list without them and without the pairs they removed. Reading resynchronises on the next record
// magic after a torn or corrupt record, which is reported and skipped, like spool recovery.
//
// Compaction (write_suppressions) writes generation N+1's list to a temporary file, fsyncs
// it, renames it to N+1.list and fsyncs the directory: the rename is the commit point. Only
// then are the files of older generations removed. A crash before the rename leaves
// generation N as it was (the temporary file is removed by the next compaction); after it,
// generation N+1 is whole and the older files are stale leftovers, ignored by readers and
// removed by the next compaction. Readers use the newest generation that has a list.
//
// SECURITY: reads files in the spool that may be torn or corrupt (and hold addresses that came
// from the network): every length is checked against the bytes read (queue/record.cc), and a
// damaged record costs only itself.
// Parsing is in suppression_file.cc (no I/O: the fuzz target links it alone), the directory
// functions in suppression_directory.cc.
// Threading: none; synchronous file I/O, used at start-up (queue/relay.cc) and by the offline
// commands (tools/ringrelay.cc), never on a shard's loop.
#pragma once
#include <cstdint>
#include <expected>
#include <string>
#include <string_view>
#include <vector>

#include "queue/record.h"

namespace ringrelay::queue {

struct suppression_entry {
    std::string tenant;   // lower-case ASCII letters (suppression_normalise)
    std::string address;  // likewise
    std::uint64_t time_us = 0;   // when it was added (the bounce)
    std::uint64_t queue_id = 0;  // the bounced message; 0 if none (an operator's --suppress)
    suppression_source source = suppression_source::hard_bounce;
    std::string reason;  // "" if none was given (bounces, --suppress)
    // In journal_contents only: a removal record. load_suppressions applies removals and never
    // returns one.
    suppression_change change = suppression_change::add;
};

// "hard-bounce", "operator", "api", "unsubscribe": as --list-suppressed and the HTTP API say it.
[[nodiscard]] std::string_view suppression_source_name(suppression_source source) noexcept;

// ASCII letters lower-cased in place (tenants and addresses compare without case).
void suppression_normalise(std::string& text) noexcept;

// SPOOL/suppression
[[nodiscard]] std::string suppression_directory(const std::string& spool);
// "0000000007.list", "0000000007.shard-3"
[[nodiscard]] std::string suppression_list_name(std::uint64_t generation);
[[nodiscard]] std::string suppression_journal_name(std::uint64_t generation, unsigned shard);

// The entries of one journal file's bytes, in file order; `name` prefixes the problems
// ("0000000007.shard-0 offset 120: checksum mismatch; skipped"). Never fails: what cannot be
// read is a problem. An empty file (a shard that added nothing) has no entries and no problem.
struct journal_contents {
    std::vector<suppression_entry> entries;
    std::vector<std::string> problems;
};
[[nodiscard]] journal_contents parse_suppression_journal(std::string_view bytes, std::string_view name);

// The list in `dir` (suppression_directory), entries merged: one per (tenant, address), with
// its latest time (on a tie the record read last wins: the list, then the journals by shard),
// pairs whose latest record is a removal left out, sorted by tenant then address. Expired entries are included (the caller
// knows the TTL: drop_expired). A missing directory is an empty list of generation 0.
struct suppression_state {
    std::uint64_t generation = 0;            // of the newest list; 0 if there is none
    std::vector<suppression_entry> entries;
    std::vector<std::string> problems;       // damaged records, unreadable files
};
[[nodiscard]] std::expected<suppression_state, std::string> load_suppressions(const std::string& dir);

// Entries added ttl_s seconds or more before now_us are removed (ttl_s 0: none).
void drop_expired(std::vector<suppression_entry>& entries, std::uint64_t now_us, std::uint32_t ttl_s);

// Writes `entries` as the list of `generation` (> every generation in `dir`), durably, then
// removes the files of older generations (see the top of this file). Creates `dir` if needed.
[[nodiscard]] std::expected<void, std::string> write_suppressions(const std::string& dir, std::uint64_t generation,
                                                                  const std::vector<suppression_entry>& entries);

}  // namespace ringrelay::queue
