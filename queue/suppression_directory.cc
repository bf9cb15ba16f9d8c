// queue/suppression_directory.cc: the directory half of queue/suppression_file.h: loading
// the newest generation and writing (compacting into) a new one. Synchronous file I/O.
#include "queue/suppression_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <utility>

#include "queue/spool.h"

namespace ringrelay::queue {

namespace {

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
            if (fresh || e.time_us >= it->second.time_us) it->second = std::move(e);
        }
    }
    state.entries.reserve(merged.size());
    for (auto& [key, e] : merged)
        if (e.change == suppression_change::add) state.entries.push_back(std::move(e));
    return state;
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
        if (e.change == suppression_change::add)
            encode_suppression_record(bytes, e.tenant, e.address, e.source, e.queue_id, e.time_us, salt, e.reason);
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
