// protocol/relay_control.cc: relay permission for RCPT (RFC 5321 §3.9; the %-hack and
// !-paths are the classic open-relay tricks, RFC 2505 §2.6).
// SECURITY: decides what an untrusted network client may make us deliver.
#include "protocol/relay_control.h"

#include <cstddef>

#include "core/ascii.h"

namespace ringrelay::protocol {

bool domain_matches(std::string_view domain, std::span<const std::string> relay_domains) noexcept {
    for (const std::string& entry : relay_domains) {
        if (entry.empty()) continue;
        if (entry.front() == '.') {
            if (domain.size() > entry.size() && core::iends_with(domain, entry)) {
                return true;
            }
        } else if (core::iequals(domain, entry)) {
            return true;
        }
    }
    return false;
}

relay_decision decide_relay(const mailbox_path& rcpt, relay_trust trust,
                            std::span<const std::string> relay_domains) noexcept {
    if (trust == relay_trust::trusted) return relay_decision::permit;
    if (rcpt.quoted_local || rcpt.routing_chars) return relay_decision::deny;
    if (rcpt.form != domain_form::name) return relay_decision::deny;
    return domain_matches(rcpt.domain, relay_domains) ? relay_decision::permit : relay_decision::deny;
}

}  // namespace ringrelay::protocol
