// tests/unit/odr/a.cpp -- one of two TUs that include all of cserve and are linked together
// SPDX-License-Identifier: BSL-1.0
//
// A function or variable defined in a header without `inline` (or, in header-only mode, a
// .ipp definition whose declaration lacks CSERVE_DECL) is defined in both a.cpp and b.cpp,
// and linking cserve_odr fails with "multiple definition".

#include <cserve/cserve.hpp>

using category_function = boost::system::error_category const& (*)() noexcept;

/// The address of a library function as this TU sees it.
category_function cserve_odr_a() noexcept
{
    return &cserve::error_category;
}
