// tests/unit/odr/b.cpp -- one of two TUs that include all of cserve and are linked together
// SPDX-License-Identifier: BSL-1.0
//
// See a.cpp: a definition missing `inline` is defined here too, and the link fails.

#include <cserve/cserve.hpp>

using category_function = boost::system::error_category const& (*)() noexcept;

category_function cserve_odr_a() noexcept;

/// True if both TUs see the same function: one definition means one address.
bool cserve_odr_b() noexcept
{
    return cserve_odr_a() == &cserve::error_category;
}
