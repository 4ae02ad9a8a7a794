/*
 * base/ut_int.h - private declarations shared by the base library's
 * sources. Only base/ and tests/base/ include it.
 */
#ifndef AURUM_BASE_UT_INT_H
#define AURUM_BASE_UT_INT_H

#include "base/ut.h"

#include "base/banned.h"

#endif
