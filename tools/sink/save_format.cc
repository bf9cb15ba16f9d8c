// tools/sink/save_format.cc: see save_format.h.
#include "tools/sink/save_format.h"

#include <cstring>

#include "core/ascii.h"
#include "protocol/received_header.h"

namespace ringrelay::sink {

namespace {

void field(std::string& out, std::string_view name, std::string_view value) {
    out.append("X-Sink-").append(name).append(": ").append(value).append("\r\n");
}

void bracketed(std::string& out, std::string_view name, std::string_view address) {
    out.append("X-Sink-").append(name).append(": <").append(address).append(">\r\n");
}

}  // namespace

void append_save_header(std::string& out, const protocol::envelope& env, std::string_view client,
                        std::size_t message_size) {
    char id[protocol::queue_id_length];
    protocol::write_queue_id(env.queue_id, id);
    field(out, "Queue-Id", std::string_view(id, sizeof id));
    field(out, "Client", client);
    field(out, "Helo", env.helo);
    bracketed(out, "Mail-From", env.mail_from);
    for (const std::string& r : env.rcpt_to) bracketed(out, "Rcpt-To", r);
    out.append("X-Sink-Size: ");
    core::append_decimal(out, message_size);
    out.append("\r\n");
}

void saved_name(std::uint64_t queue_id, char (&name)[saved_name_size]) noexcept {
    protocol::write_queue_id(queue_id, name);
    std::memcpy(name + protocol::queue_id_length, ".eml", 5);
}

void temp_name(std::uint64_t queue_id, char (&name)[temp_name_size]) noexcept {
    name[0] = '.';
    protocol::write_queue_id(queue_id, name + 1);
    std::memcpy(name + 1 + protocol::queue_id_length, ".tmp", 5);
}

std::expected<saved_message, std::string> parse_saved(std::string_view file) {
    saved_message m;
    std::size_t pos = 0;
    bool have[4] = {};  // Queue-Id, Client, Helo, Mail-From
    for (;;) {
        const std::size_t eol = file.find("\r\n", pos);
        if (eol == std::string_view::npos)
            return std::unexpected("offset " + std::to_string(pos) + ": envelope line without CRLF");
        const std::string_view line = file.substr(pos, eol - pos);
        const std::size_t line_start = pos;
        pos = eol + 2;
        constexpr std::string_view prefix = "X-Sink-";
        const std::size_t colon = line.find(": ");
        if (!line.starts_with(prefix) || colon == std::string_view::npos)
            return std::unexpected("offset " + std::to_string(line_start) + ": not an X-Sink- field");
        const std::string_view name = line.substr(prefix.size(), colon - prefix.size());
        const std::string_view value = line.substr(colon + 2);
        auto unbracket = [&](std::string& to) -> bool {
            if (value.size() < 2 || value.front() != '<' || value.back() != '>') return false;
            to.assign(value.substr(1, value.size() - 2));
            return true;
        };
        if (name == "Queue-Id") {
            m.queue_id.assign(value);
            have[0] = true;
        } else if (name == "Client") {
            m.client.assign(value);
            have[1] = true;
        } else if (name == "Helo") {
            m.helo.assign(value);
            have[2] = true;
        } else if (name == "Mail-From") {
            if (!unbracket(m.mail_from)) return std::unexpected("X-Sink-Mail-From: expected <address>");
            have[3] = true;
        } else if (name == "Rcpt-To") {
            if (!unbracket(m.rcpt_to.emplace_back())) return std::unexpected("X-Sink-Rcpt-To: expected <address>");
        } else if (name == "Size") {
            std::size_t size = 0;
            const auto r = std::from_chars(value.data(), value.data() + value.size(), size);
            if (value.empty() || r.ec != std::errc() || r.ptr != value.data() + value.size())
                return std::unexpected("X-Sink-Size: expected a number");
            if (file.size() - pos != size)
                return std::unexpected("X-Sink-Size says " + std::to_string(size) + " bytes but " +
                                       std::to_string(file.size() - pos) + " follow");
            for (bool h : have)
                if (!h) return std::unexpected("envelope incomplete before X-Sink-Size");
            if (m.rcpt_to.empty()) return std::unexpected("no X-Sink-Rcpt-To before X-Sink-Size");
            m.message.assign(file.substr(pos));
            return m;
        } else {
            return std::unexpected("unknown field X-Sink-" + std::string(name));
        }
    }
}

}  // namespace ringrelay::sink
