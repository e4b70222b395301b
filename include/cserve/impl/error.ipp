// cserve/impl/error.ipp -- the "cserve" error category
// SPDX-License-Identifier: BSL-1.0
#ifndef CSERVE_IMPL_ERROR_IPP
#define CSERVE_IMPL_ERROR_IPP

#include <cserve/error.hpp>

namespace cserve {

namespace detail {

class error_category_impl final : public boost::system::error_category {
public:
    char const* name() const noexcept override { return "cserve"; }

    std::string
    message(int ev) const override
    {
        switch (static_cast<error>(ev)) {
        case error::client_disconnected: return "client disconnected";
        case error::unexpected_event: return "unexpected event for the connection's state";
        case error::invalid_header: return "invalid header name or value";
        case error::invalid_status: return "invalid status code";
        case error::content_length_exceeded: return "response body longer than its Content-Length";
        case error::startup_failed: return "application startup failed";
        case error::invalid_close: return "invalid WebSocket close code or reason";
        }
        return "cserve error";
    }
};

} // namespace detail

boost::system::error_category const&
error_category() noexcept
{
    static detail::error_category_impl const cat;
    return cat;
}

} // namespace cserve

#endif
