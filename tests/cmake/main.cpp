// tests/cmake/main.cpp -- the program every CMake consumer test builds and runs
// SPDX-License-Identifier: BSL-1.0

#include <cserve/cserve.hpp>

#include <cstring>
#include <iostream>
#include <string>

int main()
{
    cserve::config cfg;
    cfg.port = 0;

    // Reaches into the library's compiled part (impl/error.ipp), so a consumer of the
    // separately compiled flavour links against it.
    std::string const category = cserve::error_category().name();

    std::cout << "cserve " << CSERVE_VERSION_STRING << ", host " << cfg.host << ", error category "
              << category << '\n';

    if (std::strcmp(CSERVE_VERSION_STRING, CSERVE_EXPECTED_VERSION) != 0) {
        std::cerr << "expected version " << CSERVE_EXPECTED_VERSION << '\n';
        return 1;
    }
    if (category != "cserve") {
        std::cerr << "expected error category \"cserve\"\n";
        return 1;
    }
    return 0;
}
