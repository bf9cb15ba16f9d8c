// core/http_answer.cc: the handles of answers given later (core/http_server.h: http_answer,
// http_deferred), apart from the connection's code so that a service's own tests and fuzz
// targets link without the server.
#include <memory>
#include <utility>

#include "core/http_server.h"

namespace ringrelay::core {

http_deferred http_answer::defer() noexcept {
    if (!_owed) _owed = std::make_shared<http_owed>();
    _deferred = true;
    return http_deferred(_owed);
}

void http_deferred::complete(http_response&& response) noexcept {
    if (!_owed || _owed->response) return;
    _owed->response = std::move(response);
    if (_owed->connection != nullptr) _owed->connection->owed_ready();
}

}  // namespace ringrelay::core
