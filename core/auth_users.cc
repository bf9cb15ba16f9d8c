// core/auth_users.cc: see auth_users.h.
#include "core/auth_users.h"

#include <fstream>
#include <sstream>

#include "core/password_hash.h"

namespace ringrelay::core {

bool valid_user_name(std::string_view user) noexcept {
    if (user.empty() || user.size() > 255) return false;
    for (const char ch : user) {
        const auto c = static_cast<unsigned char>(ch);
        if (c <= 0x20 || c == 0x7F || c == ':') return false;  // controls, space, DEL, the separator
    }
    return true;
}

std::expected<auth_users, std::string> auth_users::parse(std::string_view text, std::string_view origin) {
    auth_users users;
    std::size_t line_no = 0;
    while (!text.empty()) {
        ++line_no;
        const auto nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        auto fail = [&](std::string_view why) {
            return std::unexpected(std::string(origin) + ":" + std::to_string(line_no) + ": " + std::string(why));
        };
        if (line.empty() || line[0] == '#') continue;
        const auto colon = line.find(':');
        if (colon == std::string_view::npos) return fail("expected user:hash");
        const std::string_view user = line.substr(0, colon);
        const std::string_view hash = line.substr(colon + 1);
        if (!valid_user_name(user)) return fail("bad user name (1-255 octets, no spaces, controls or ':')");
        if (auto ok = check_hash_format(hash); !ok) return fail("user '" + std::string(user) + "': " + ok.error());
        if (!users._users.emplace(std::string(user), std::string(hash)).second)
            return fail("user '" + std::string(user) + "' appears twice");
    }
    return users;
}

std::expected<auth_users, std::string> auth_users::load(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::unexpected("cannot read " + path);
    std::stringstream ss;
    ss << in.rdbuf();
    return parse(ss.str(), path);
}

const std::string* auth_users::hash_of(std::string_view user) const noexcept {
    const auto it = _users.find(user);
    return it == _users.end() ? nullptr : &it->second;
}

std::vector<std::string_view> auth_users::hashes() const {
    std::vector<std::string_view> out;
    out.reserve(_users.size());
    for (const auto& [user, hash] : _users) out.emplace_back(hash);
    return out;
}

}  // namespace ringrelay::core
