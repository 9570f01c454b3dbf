// Byte counts and large numbers as people read them in tables and logs.
#pragma once
#include <string>

namespace fp4lab {

std::string human_bytes(double b);  // decimal units: "1.23 GB"
std::string human_count(double n);  // "8.03B", "512.00M", "1.5K"

}  // namespace fp4lab
