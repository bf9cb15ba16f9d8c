// queue/status_page.cc: see status_page.h.
#include "queue/status_page.h"

#include "queue/status_css_embedded.h"
#include "queue/status_html_embedded.h"
#include "queue/status_js_embedded.h"

namespace ringrelay::queue {

std::optional<status_asset> status_page_asset(std::string_view path) noexcept {
    if (path == "/") return status_asset{"text/html; charset=utf-8", embedded::status_html};
    if (path == "/status.js") return status_asset{"text/javascript; charset=utf-8", embedded::status_js};
    if (path == "/status.css") return status_asset{"text/css; charset=utf-8", embedded::status_css};
    return std::nullopt;
}

}  // namespace ringrelay::queue
