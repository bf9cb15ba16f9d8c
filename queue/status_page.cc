// queue/status_page.cc: see status_page.h.
#include "queue/status_page.h"

#include "queue/status_css_embedded.h"
#include "queue/status_html_embedded.h"
#include "queue/status_icon_embedded.h"
#include "queue/status_js_embedded.h"

namespace ringrelay::queue {

std::optional<status_asset> status_page_asset(std::string_view path) noexcept {
    if (path == "/") return status_asset{"text/html; charset=utf-8", embedded::status_html};
    if (path == "/status/status.js") return status_asset{"text/javascript; charset=utf-8", embedded::status_js};
    if (path == "/status/status.css") return status_asset{"text/css; charset=utf-8", embedded::status_css};
    if (path == "/status/icon.svg") return status_asset{"image/svg+xml", embedded::status_icon};
    return std::nullopt;
}

}  // namespace ringrelay::queue
