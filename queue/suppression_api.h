// queue/suppression_api.h: /api/v1/suppressions on a shard's HTTP endpoint (issue 18; the route
// and who may call it are queue/http_api.h's, the bodies and answers queue/suppression_request.h's).
//
// POST and DELETE act on the relay's table at once (every shard's next RCPT sees them) and are
// journaled by this shard's suppression_list (queue/suppression.h) with its next group commit:
// the answer ({"added": N, "already": M} / {"removed": N}) is sent once that commit's fdatasync
// has completed, so a 200 means the change survives a crash. If the commit fails the answer is
// 503 and the change stays in effect and in memory, written again a second later (it is durable
// once a later commit succeeds; a restart before that loses it). DELETE of pairs none of which
// is on the list is 404 and journals nothing.
//
// GET reads the list from the journal files (the table holds hashes only: queue/
// suppression_table.h) on the relay's admin work pool, never on the shard thread: the newest
// generation's list and journals merged (load_suppressions), expired entries dropped, then one
// page chosen. Each page reads the whole list (about a second per million entries): this is an
// operator's tool, not a lookup service. Additions and removals show in it once journaled (a
// loop turn after they are made, even before a POST's answer).
//
// POST /u/TOKEN (queue/unsubscribe.h) is served here too: the same list, the same durability.
//
// Lifecycle: one per shard with an HTTP endpoint, made by the shard after its suppression_list;
// shard-local. Requests waiting for a commit or a listing when the shard stops are never
// answered (their connections are closed with the shard).
#pragma once
#include <cstdint>
#include <string>

#include "core/http_request.h"
#include "core/http_server.h"
#include "core/work_pool.h"
#include "queue/http_api.h"
#include "queue/suppression.h"
#include "queue/unsubscribe.h"

namespace ringrelay::queue {

class suppression_api final : public suppression_service {
public:
    // list: this shard's side of the list (outlives this); null with --no-suppression (every
    // request answers 503). pool and back: where GET reads the files (outlive this); null pool:
    // GET answers 503. dir: the suppression directory; ttl_s: the table's TTL.
    // links: the one-click unsubscribe links (queue/unsubscribe.h; outlive this); null: POST
    // /u/TOKEN answers 404.
    suppression_api(suppression_list* list, core::work_pool* pool, core::work_return* back, std::string dir,
                    std::uint32_t ttl_s, const unsubscribe_links* links = nullptr) noexcept
        : _list(list), _pool(pool), _back(back), _dir(std::move(dir)), _ttl_s(ttl_s), _links(links) {}

    // GET, POST or DELETE /api/v1/suppressions (http_api has checked the method).
    void suppressions(const core::http_request& request, core::http_answer& answer) noexcept override;
    // POST /u/TOKEN (anyone may call it): a token made with the key puts its recipient on its
    // tenant's list (source unsubscribe), answered 200 {"unsubscribed": true} once durable (as
    // POST above); a token that does not verify is 400 and changes nothing.
    void unsubscribe(const core::http_request& request, core::http_answer& answer) noexcept override;

private:
    void list(const core::http_request& request, core::http_answer& answer) noexcept;
    void add(const core::http_request& request, core::http_answer& answer) noexcept;
    void remove(const core::http_request& request, core::http_answer& answer) noexcept;
    // Answers `body` (200) once what the list holds now is durable, 503 if that commit fails.
    void answer_when_durable(std::string body, core::http_answer& answer) noexcept;

    suppression_list* const _list;
    core::work_pool* const _pool;
    core::work_return* const _back;
    const std::string _dir;
    const std::uint32_t _ttl_s;
    const unsubscribe_links* const _links;
};

}  // namespace ringrelay::queue
