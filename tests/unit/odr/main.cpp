// tests/unit/odr/main.cpp -- the ODR test: a.cpp and b.cpp link together and agree
// SPDX-License-Identifier: BSL-1.0

bool cserve_odr_b() noexcept;

int main()
{
    return cserve_odr_b() ? 0 : 1;
}
