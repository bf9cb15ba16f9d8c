// queue/operator_holds.h: the suspensions an operator asked for (POST /api/v1/suspend, issue 18),
// one shard's copy: every shard gets each suspension and resumption through the cross-shard
// rings (queue/delivery.h administer()) and keeps this table. The site's owner shard holds a
// site or provider's jobs at the site (queue/destination_pool.h dispatch: no connection, no
// message; they wait in its ready queue, expire there past --max-age); the message's shard
// defers the recipients of a domain or a tenant until the suspension ends (queue/delivery.h
// schedule). A suspension ends at its time or by a resumption; ended ones are dropped lazily.
//
// Threading: shard-local.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/ascii.h"
#include "queue/admin_request.h"

namespace ringrelay::queue {

class operator_holds {
public:
    struct hold {
        admin_selector field = admin_selector::site;  // site, provider, domain or tenant
        std::string value;                            // lower-cased
        std::uint64_t until_us = 0;                   // wall clock (Unix us)
        std::int64_t until_ms = 0;                    // the same on the monotonic clock
    };

    // A new suspension (one of the same field and value is replaced).
    void add(hold h) {
        (void)remove(h.field, h.value);
        _holds.push_back(std::move(h));
    }
    // Ends the suspensions of `field` and `value`; how many there were (0 or 1).
    std::size_t remove(admin_selector field, std::string_view value) {
        const auto end = std::remove_if(_holds.begin(), _holds.end(),
                                        [&](const hold& h) { return h.field == field && h.value == value; });
        const auto n = static_cast<std::size_t>(_holds.end() - end);
        _holds.erase(end, _holds.end());
        return n;
    }
    // The monotonic end of the suspension holding a site named `name` of provider `provider`
    // (`name` lower-case; the provider compared without case) at `now_ms`; 0: none.
    [[nodiscard]] std::int64_t site_until_ms(std::string_view name, std::string_view provider,
                                             std::int64_t now_ms) const noexcept {
        return latest(&hold::until_ms, now_ms, [&](const hold& h) {
            return (h.field == admin_selector::site && h.value == name) ||
                   (h.field == admin_selector::provider && !provider.empty() && core::iequals(h.value, provider));
        });
    }
    // The wall-clock end of the suspension holding a recipient of domain `domain` of a message of
    // tenant `tenant` (both lower-case) at `now_us`; 0: none.
    [[nodiscard]] std::uint64_t recipient_until_us(std::string_view domain, std::string_view tenant,
                                                   std::uint64_t now_us) const noexcept {
        return latest(&hold::until_us, now_us, [&](const hold& h) {
            return (h.field == admin_selector::domain && h.value == domain) ||
                   (h.field == admin_selector::tenant && !tenant.empty() && h.value == tenant);
        });
    }
    [[nodiscard]] bool empty() const noexcept { return _holds.empty(); }

private:
    // The latest end (member `until`) of the holds still running at `now` that match; 0: none.
    template <typename T, typename Match>
    [[nodiscard]] T latest(T hold::*until, T now, Match match) const noexcept {
        T end = 0;
        for (const hold& h : _holds)
            if (h.*until > now && match(h)) end = std::max(end, h.*until);
        return end;
    }

    std::vector<hold> _holds;  // a handful: an operator's
};

}  // namespace ringrelay::queue
