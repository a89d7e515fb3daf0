/* errors.c - the status table of errors.h turned into lookups. */
#include "common/common.h"

int aq_status_from_err(int neg_err)
{
	int e = -neg_err;
#define AQ_X(name, num, err, text) if (e == (err < 0 ? -(err) : (err))) return num;
	AQ_STATUS_TABLE(AQ_X)
#undef AQ_X
	return AQ_S_IO;
}

int aq_err_from_status(int status)
{
	switch (status) {
#define AQ_X(name, num, err, text) case num: return -(err < 0 ? -(err) : (err));
	AQ_STATUS_TABLE(AQ_X)
#undef AQ_X
	}
	return -EIO;
}

const char *aq_strerror(int neg_err)
{
	int e = -neg_err;
#define AQ_X(name, num, err, text) if (e == (err < 0 ? -(err) : (err))) return text;
	AQ_STATUS_TABLE(AQ_X)
#undef AQ_X
	return strerror(e);
}

int aq_errno_posix(int neg_err)
{
	switch (-neg_err) {
	case AQ_EAUTH: return EACCES;
	case AQ_ESTALE_MAP: return EAGAIN;
	case AQ_ENOT_OWNER: return EAGAIN;
	case AQ_ECORRUPT: return EIO;
	case AQ_EBAD_VERSION: return EPROTO;
	}
	return -neg_err;
}

bool aq_err_unreachable(int neg_err)
{
	switch (-neg_err) {
	case ECONNREFUSED:
	case ENOTCONN:
	case ECONNRESET:
	case EPIPE:
	case EHOSTUNREACH:
	case ETIMEDOUT:
		return true;
	}
	return false;
}
