/*
 * base/banned.h - makes unsafe string functions compile errors, as git's
 * banned.h does. Every *_int.h includes it last. Use ut_strlcpy or
 * snprintf instead.
 */
#ifndef AURUM_BASE_BANNED_H
#define AURUM_BASE_BANNED_H

#define BANNED(func) sorry_##func##_is_a_banned_function

#undef strcpy
#define strcpy(x, y) BANNED(strcpy)
#undef strcat
#define strcat(x, y) BANNED(strcat)
#undef strncpy
#define strncpy(x, y, n) BANNED(strncpy)
#undef sprintf
#define sprintf(...) BANNED(sprintf)
#undef vsprintf
#define vsprintf(...) BANNED(vsprintf)
#undef strtok
#define strtok(x, y) BANNED(strtok)
#undef gets
#define gets(x) BANNED(gets)

#endif
