# webui/: the status-page program. All webui/*.c form one program,
# $(B)/bin/webui (static assets live in webui/www/). Local prefix web_.
webui_SRCS := $(wildcard webui/*.c)
ifneq ($(webui_SRCS),)
PROGS += webui
endif
