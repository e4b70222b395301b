// cserve/impl/event.ipp -- event names
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_EVENT_IPP
#define CSERVE_IMPL_EVENT_IPP

#include <cserve/event.hpp>

#include <array>

namespace cserve {

std::string_view
event_name(event const& e) noexcept
{
    static constexpr std::array<std::string_view, std::variant_size_v<event>> names{
        "http.request",
        "http.disconnect",
        "http.response.start",
        "http.response.body",
        "http.response.trailers",
        "websocket.connect",
        "websocket.accept",
        "websocket.receive",
        "websocket.send",
        "websocket.disconnect",
        "websocket.close",
        "lifespan.startup",
        "lifespan.startup.complete",
        "lifespan.startup.failed",
        "lifespan.shutdown",
        "lifespan.shutdown.complete",
        "lifespan.shutdown.failed",
        "http.response.early_hint",
    };
    return names[e.index()];
}

} // namespace cserve

#endif
