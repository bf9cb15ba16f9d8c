// queue/suppression_file.cc: see suppression_file.h.
#include "queue/suppression_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <utility>

#include "queue/spool.h"

namespace ringrelay::queue {

namespace {

constexpr std::size_t segment_copy = record_header_size + segment_payload_size;
constexpr std::string_view list_suffix = ".list";
constexpr std::string_view journal_infix = ".shard-";

// The generation of "0000000007.list" / "0000000007.shard-3"; 0 if the name is neither.
std::uint64_t generation_of(std::string_view name, bool& is_list) {
    if (name.size() < 11 || name[10] != '.') return 0;
    std::uint64_t n = 0;
    for (std::size_t i = 0; i < 10; ++i) {
        if (name[i] < '0' || name[i] > '9') return 0;
        n = n * 10 + static_cast<std::uint64_t>(name[i] - '0');
    }
    const std::string_view rest = name.substr(10);
    if (rest == list_suffix) {
        is_list = true;
        return n;
    }
    if (!rest.starts_with(journal_infix) || rest.size() == journal_infix.size()) return 0;
    for (const char ch : rest.substr(journal_infix.size()))
        if (ch < '0' || ch > '9') return 0;
    is_list = false;
    return n;
}

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

bool fsync_directory(const std::string& dir) {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return false;
    const int rc = ::fsync(fd);
    ::close(fd);
    return rc == 0;
}

bool write_all(int fd, std::string_view bytes) {
    std::size_t off = 0;
    while (off < bytes.size()) {
        const ssize_t n = ::write(fd, bytes.data() + off, bytes.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (n == 0) errno = EIO;
            return false;
        }
        off += static_cast<std::size_t>(n);
    }
    return true;
}

}  // namespace

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

std::expected<suppression_state, std::string> load_suppressions(const std::string& dir) {
    suppression_state state;
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) {
        if (errno == ENOENT) return state;
        return std::unexpected(errno_text(dir));
    }
    std::vector<std::pair<std::uint64_t, std::string>> journals;
    while (dirent* e = ::readdir(d)) {
        bool is_list = false;
        const std::uint64_t g = generation_of(e->d_name, is_list);
        if (g == 0) continue;
        if (is_list) state.generation = std::max(state.generation, g);
        else journals.emplace_back(g, e->d_name);
    }
    ::closedir(d);
    std::vector<std::string> files;
    if (state.generation != 0) files.push_back(suppression_list_name(state.generation));
    std::sort(journals.begin(), journals.end());
    for (auto& [g, name] : journals) {
        if (g == state.generation) files.push_back(name);
        else if (g > state.generation)
            // Shards write only after their generation's list is in place: someone removed it.
            state.problems.push_back(name + ": no list of its generation; ignored");
        // Older generations: stale leftovers of a compaction, already in the list.
    }
    // The later time wins; std::map keeps the result sorted by tenant, then address.
    std::map<std::pair<std::string, std::string>, suppression_entry> merged;
    std::string bytes;
    for (const std::string& name : files) {
        std::string error;
        if (!read_whole_file(dir + "/" + name, bytes, error)) {
            state.problems.push_back(error);
            continue;
        }
        journal_contents c = parse_suppression_journal(bytes, name);
        for (std::string& p : c.problems) state.problems.push_back(std::move(p));
        for (suppression_entry& e : c.entries) {
            auto [it, fresh] = merged.try_emplace({e.tenant, e.address});
            if (fresh || e.time_us > it->second.time_us) it->second = std::move(e);
        }
    }
    state.entries.reserve(merged.size());
    for (auto& [key, e] : merged) state.entries.push_back(std::move(e));
    return state;
}

void drop_expired(std::vector<suppression_entry>& entries, std::uint64_t now_us, std::uint32_t ttl_s) {
    if (ttl_s == 0) return;
    const std::uint64_t ttl_us = static_cast<std::uint64_t>(ttl_s) * 1000000;
    std::erase_if(entries, [&](const suppression_entry& e) { return e.time_us + ttl_us <= now_us; });
}

std::expected<void, std::string> write_suppressions(const std::string& dir, std::uint64_t generation,
                                                    const std::vector<suppression_entry>& entries) {
    if (!make_directories(dir)) return std::unexpected(errno_text(dir));
    std::uint32_t salt = 0;
    if (::getrandom(&salt, sizeof salt, 0) != static_cast<ssize_t>(sizeof salt))
        salt = static_cast<std::uint32_t>(std::chrono::system_clock::now().time_since_epoch().count() * 0x9e3779b1u);
    std::string bytes;
    encode_segment_record(bytes, salt);
    encode_segment_record(bytes, salt);
    for (const suppression_entry& e : entries)
        encode_suppression_record(bytes, e.tenant, e.address, e.source, e.queue_id, e.time_us, salt);
    const std::string name = suppression_list_name(generation);
    const std::string temporary = dir + "/" + name + ".tmp";
    const std::string final_path = dir + "/" + name;
    const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) return std::unexpected(errno_text(temporary));
    if (!write_all(fd, bytes) || ::fsync(fd) != 0) {
        const std::string error = errno_text(temporary);
        ::close(fd);
        ::unlink(temporary.c_str());
        return std::unexpected(error);
    }
    ::close(fd);
    // The commit point: from here generation `generation` is the list.
    if (::rename(temporary.c_str(), final_path.c_str()) != 0 || !fsync_directory(dir)) {
        const std::string error = errno_text(final_path);
        ::unlink(temporary.c_str());
        return std::unexpected(error);
    }
    // Older generations and temporary files are leftovers now. A failed unlink only leaves a
    // stale file, which readers ignore.
    if (DIR* d = ::opendir(dir.c_str())) {
        std::vector<std::string> stale;
        while (dirent* e = ::readdir(d)) {
            const std::string_view n(e->d_name);
            bool is_list = false;
            const std::uint64_t g = generation_of(n, is_list);
            if ((g != 0 && g < generation) || (n.ends_with(".tmp") && n != name + ".tmp"))
                stale.emplace_back(n);
        }
        ::closedir(d);
        for (const std::string& n : stale) ::unlink((dir + "/" + n).c_str());
        if (!stale.empty()) (void)fsync_directory(dir);
    }
    return {};
}

}  // namespace ringrelay::queue
